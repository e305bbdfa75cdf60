"""One FastAPI router per API surface of ``tenfold serve``; each reads the app's
:class:`~tenfold.serve.serving.Serving` through :func:`serving`."""
from __future__ import annotations

from fastapi import Request

from tenfold.serve.serving import Serving


def serving(request: Request) -> Serving:
    """FastAPI dependency: the app's :class:`Serving`."""
    return request.app.state.serving


def include_usage(req) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))
