"""``GET /health`` (liveness, and the engine's counters for a caller with a key) and ``GET /metrics`` (Prometheus)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving

router = APIRouter()


@router.get("/metrics")
async def prometheus(s: Serving = Depends(serving)):
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(s.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


@router.api_route("/health", methods=["GET", "HEAD"])
async def health(request: Request, s: Serving = Depends(serving)):
    brief = {"status": "ok", "model": s.model_name}
    tenant = request.scope.get("state", {}).get("tenant")
    if s.settings.api_keys and tenant is None:
        return brief  # without a valid key: alive or not, nothing about any key's traffic
    # with keys, each key sees its own jobs, sessions and counters only (issue 38 D6)
    return {**brief, "cache": s.engine.config.label(), "weights": s.weights,
            **s.engine.health(tenant if s.settings.api_keys else None)}
