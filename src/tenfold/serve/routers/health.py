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


@router.get("/health")
async def health(request: Request, s: Serving = Depends(serving)):
    brief = {"status": "ok", "model": s.model_name}
    if s.settings.api_keys and request.scope.get("state", {}).get("tenant") is None:
        return brief  # without a valid key: alive or not, nothing about other tenants' traffic
    return {**brief, "cache": s.engine.config.label(), "weights": s.weights, **s.engine.health()}
