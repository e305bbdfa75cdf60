"""ASGI middleware of ``tenfold serve``: body limit, request ids, API keys, and a last-resort JSON 500.

Each class is plain ASGI (``__call__(scope, receive, send)``), so it composes with Starlette's own middleware
(``CORSMiddleware``) in :func:`tenfold.serve.app.create_app`. Errors are OpenAI-style objects
``{"error": {"message", "type", "param", "code"}}``.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import uuid

log = logging.getLogger("tenfold.serve")


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    """An OpenAI-style error object."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_for(scope, status: int, body: dict) -> dict:
    """``body`` as it is, or in Anthropic's shape on the Anthropic Messages endpoints (``/v1/messages...``)."""
    if scope.get("path", "").startswith("/v1/messages"):
        from tenfold.serve.render_anthropic import anthropic_error

        return anthropic_error(status, body["error"]["message"])
    return body


async def send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    """Send a complete JSON response through raw ASGI ``send``."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimit:
    """Read the whole request body first, at most ``max_bytes`` of it; a larger body gets 413, and a body that
    stalls for ``timeout`` seconds between chunks gets 408 (a client cannot hold a connection by never finishing).

    Works for ``Content-Length`` and chunked bodies alike: the body is buffered, then replayed to the app, so
    the 413 is sent before any parsing. Later ``receive`` calls (disconnect detection) pass through.
    """

    def __init__(self, app, max_bytes: int, timeout: float = 15.0, total: float | None = None):
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout
        self.total = 4 * timeout if total is None else total  # a body trickled byte by byte ends too

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._too_big(scope, send)
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.total
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, min(self.timeout, left)))
            except asyncio.TimeoutError:
                why = (f"the request body stalled for {self.timeout:g} s" if left > self.timeout else
                       f"the request body took longer than {self.total:g} s")
                return await send_json(send, 408, error_for(scope, 408, error_body(why, code="request_timeout")),
                                       [(b"connection", b"close")])
            if message["type"] == "http.disconnect":
                return None
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                return await self._too_big(scope, send)
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": b"".join(chunks), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _too_big(self, scope, send):
        body = error_body(f"request body larger than {self.max_bytes} bytes", code="body_too_large")
        await send_json(send, 413, error_for(scope, 413, body), [(b"connection", b"close")])


class RequestId:
    """Every response carries ``X-Request-Id``: the client's own (when it sent a sane one) or a new one.

    The id is also put in ``scope["state"]["request_id"]`` for the endpoints and logs.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        sent = dict(scope.get("headers") or []).get(b"x-request-id", b"")
        ok = 0 < len(sent) <= 128 and all(33 <= c < 127 for c in sent)
        rid = sent if ok else uuid.uuid4().hex.encode()
        scope.setdefault("state", {})["request_id"] = rid.decode()

        async def with_id(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid)]}
            await send(message)

        return await self.app(scope, receive, with_id)


INTERNAL_ERROR = error_body("internal server error (the server log has the details)", "server_error",
                            code="internal_error")


async def json_500(request, exc):
    """Starlette's handler for ``Exception``: the 500 its ServerErrorMiddleware sends is this JSON object.

    (Starlette then re-raises the exception; :class:`CatchAll` logs it and keeps the connection alive.)
    """
    from starlette.responses import JSONResponse

    return JSONResponse(INTERNAL_ERROR, status_code=500)


class CatchAll:
    """The outermost layer: an exception nobody handled becomes an OpenAI-style JSON 500, and the server (and the
    client's keep-alive connection) keeps serving. The traceback goes to the server log, never to the client."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracked(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception:  # noqa: BLE001 - the last line of defence
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_json(send, 500, INTERNAL_ERROR)


def tenant_of(key: str) -> str:
    """A short, stable, non-reversible name for an API key: the namespace of that key's sessions."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


class ApiKeys:
    """Bearer-token authentication, and the server's one key matcher: every request outside ``public_paths`` (exact
    paths, or prefixes ending in ``/`` other than ``/`` itself) needs ``Authorization: Bearer <key>`` with one of
    ``keys``; others get an OpenAI-style 401.

    Sets ``scope["state"]["tenant"]`` to :func:`tenant_of` the key (``""`` when no keys are configured), which
    namespaces session ids so that no key can reach, wipe or probe another key's sessions. On a public path a valid
    key still sets the tenant, and a missing or wrong one leaves it None (the endpoint then shows only what is
    public). The key is read from ``Authorization: Bearer`` or Anthropic's ``x-api-key`` header; keys are compared in
    constant time; a request carrying different keys (two headers) is refused (401), as there is no one key to
    read. ``OPTIONS`` (CORS preflight) passes, as browsers send it without
    credentials.
    """

    def __init__(self, app, keys: list[str], public_paths: tuple[str, ...] = ("/health",)):
        self.app, self.keys, self.public_paths = app, [k.encode() for k in keys], public_paths

    def _match(self, token: bytes) -> bytes | None:
        found = None
        for key in self.keys:  # no early exit: the time does not depend on which key matched
            if hmac.compare_digest(token, key):
                found = key
        return found

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        if not self.keys:
            state["tenant"] = ""
            return await self.app(scope, receive, send)
        if scope.get("method") == "OPTIONS":
            state["tenant"] = None
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        public = path in self.public_paths or any(p.endswith("/") and p != "/" and path.startswith(p)
                                                  for p in self.public_paths)
        sent = []  # every credential the request carries: Bearer tokens and Anthropic's x-api-key
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                sent.append(token.strip() if scheme.lower() == b"bearer" else b"")
            elif name == b"x-api-key":
                sent.append(value.strip())
        key = self._match(sent[0]) if len(set(sent)) == 1 and sent[0] else None
        if key is None and not public:
            message = ("missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>')" if not sent else
                       "send one API key, not several" if len(set(sent)) > 1 else "invalid API key")
            body = error_for(scope, 401, error_body(message, "authentication_error", code="invalid_api_key"))
            return await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])
        state["tenant"] = None if key is None else tenant_of(key.decode())
        return await self.app(scope, receive, send)
