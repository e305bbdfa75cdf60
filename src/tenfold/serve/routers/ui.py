"""The chat page at ``/`` (``tenfold serve --no-ui`` turns it off): static files inside the package, no CDN and no
network, served with a tight Content-Security-Policy (scripts and styles from this server only, no inline code,
no framing). The page talks to the server's own API with streaming, and shows what the sink cache still holds
(``GET /v1/sessions/{id}/cache``)."""
from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

router = APIRouter()

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
_FILES = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "markdown.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8",
          "favicon.svg": "image/svg+xml"}
_HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-cache"}


def _file(name: str) -> Response:
    body = resources.files("tenfold.serve").joinpath("ui", name).read_bytes()
    return Response(body, media_type=_FILES[name], headers=_HEADERS)


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index():
    return _file("index.html")


@router.get("/favicon.ico", include_in_schema=False)
async def favicon():
    return _file("favicon.svg")


@router.get("/ui/{name}", include_in_schema=False)
async def asset(name: str):
    if name not in _FILES:
        from tenfold.serve.errors import APIError

        raise APIError(404, f"no such file: /ui/{name}", "not_found_error")
    return _file(name)
