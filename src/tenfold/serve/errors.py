"""Errors of the HTTP API: :class:`APIError` (an OpenAI-style error with its status) and the FastAPI exception
handlers that turn it, request-validation failures and Starlette's HTTP errors into
``{"error": {"message", "type", "param", "code"}}`` bodies with a 4xx status."""
from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenfold.serve.middleware import error_body


class APIError(Exception):
    """An error answered with ``status`` and an OpenAI-style body; ``headers`` (e.g. ``Retry-After``) go with it."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


def model_not_found(model_id: str, served: str) -> APIError:
    return APIError(404, f"the model {model_id!r} does not exist; this server serves {served!r}", "not_found_error",
                    "model", "model_not_found")


def _json(request, status: int, body: dict, headers: dict | None = None) -> JSONResponse:
    """``body`` as it is, or in Anthropic's error shape on the Anthropic Messages endpoints."""
    if request.url.path.startswith("/v1/messages"):
        from tenfold.serve.render_anthropic import anthropic_error

        body = anthropic_error(status, body["error"]["message"])
    return JSONResponse(body, status_code=status, headers=headers)


def install_handlers(app: FastAPI) -> None:
    """Answer APIError, invalid bodies (400 naming the first bad field) and Starlette's 404/405 as JSON errors
    (OpenAI's shape, Anthropic's on ``/v1/messages``)."""

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return _json(request, exc.status, exc.body(), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid" or (not loc and first.get("type") in ("model_attributes_type", "dict_type")):
            return _json(request, 400, error_body("the request body must be a JSON object", code="invalid_json"))
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return _json(request, 400, error_body(message, param=".".join(loc) or None))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return _json(request, exc.status_code, error_body(str(exc.detail), type_))
