"""The HTTP API of ``tenfold serve`` (FastAPI) on top of :class:`~tenfold.serve.engine.Engine`: wiring only.

Endpoints, one router each (:mod:`tenfold.serve.routers`): ``GET /v1/models``, ``GET /v1/models/{id}``,
``POST /v1/chat/completions``, ``POST /v1/completions`` (streamed as server-sent events or not), the Responses API
(``/v1/responses``, stored responses continuing sink-cache sessions), ``POST /v1/embeddings``, vLLM's
``POST /tokenize`` and ``/detokenize``, Anthropic's ``POST /v1/messages``, ``GET /v1/sessions/{id}/cache`` (what a session's sink cache holds), the chat page
at ``/``, ``GET /health``,
``GET /metrics`` (Prometheus). Request bodies are in :mod:`tenfold.serve.protocol`, what the endpoints share
(checks, sessions, grammars, submitting to the engine) in :class:`~tenfold.serve.serving.Serving`. Errors are
OpenAI-style objects ``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for bad requests and a
JSON 500 for anything unexpected. A request with ``user`` or an ``X-Session-Id`` header continues that session's sink
cache; with API keys, session ids live in the key's own namespace.

Layers, outermost first: :class:`~tenfold.serve.middleware.CatchAll`, the metrics counter, ``RequestId``,
Starlette's ``TrustedHostMiddleware`` (with ``allowed_hosts``), ``CORSMiddleware`` (with ``allowed_origins``),
``ApiKeys`` (the one key matcher; it sets the tenant),
``BodyLimit``, then the routes.
"""
from __future__ import annotations

import importlib

from fastapi import FastAPI

from tenfold.serve.engine import Engine
from tenfold.serve.errors import APIError, install_handlers
from tenfold.serve.middleware import ApiKeys, BodyLimit, CatchAll, RequestId, json_500
from tenfold.serve.serving import Serving
from tenfold.serve.settings import ServeSettings

__all__ = ["APIError", "ServeSettings", "create_app"]


def create_app(engine: Engine, settings: ServeSettings, embeddings=None, ui: bool = True):
    """The ASGI app: the routers, sharing one :class:`Serving`, wrapped in tenfold's middleware. ``embeddings``: an
    :class:`~tenfold.serve.embeddings.EmbeddingService` for ``/v1/embeddings`` (None: that endpoint says so).
    ``ui``: serve the chat page at ``/`` (its files are public; everything it asks the API needs a key)."""
    app = FastAPI(title="tenfold serve", docs_url=None, redoc_url=None, exception_handlers={Exception: json_500})
    install_handlers(app)
    app.state.serving = serving = Serving(engine, settings, embeddings)
    names = ["health", "models", "chat", "completions", "responses", "embeddings", "anthropic", "sessions"]
    for name in names + (["ui"] if ui else []):
        app.include_router(importlib.import_module(f"tenfold.serve.routers.{name}").router)
    s = settings
    wrapped = BodyLimit(app, s.max_body_bytes, s.body_timeout)
    public = ("/health", "/metrics") if s.public_metrics else ("/health",)
    wrapped = ApiKeys(wrapped, s.api_keys, public + (("/", "/favicon.ico", "/ui/") if ui else ()))
    if s.allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        # any request header: the official browser SDKs send their own (x-stainless-*, anthropic-version,
        # x-api-key); every request still needs a key
        wrapped = CORSMiddleware(wrapped, allow_origins=s.allowed_origins,
                                 allow_methods=["GET", "POST", "DELETE", "OPTIONS"], allow_headers=["*"],
                                 expose_headers=["X-Request-Id"])
    if "*" not in s.allowed_hosts:  # a web page cannot reach a loopback server through a rebinding DNS name
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        wrapped = TrustedHostMiddleware(wrapped, allowed_hosts=s.allowed_hosts, www_redirect=False)
    return CatchAll(serving.metrics.middleware(RequestId(wrapped)))
