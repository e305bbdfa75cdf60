"""``GET /v1/models`` and ``GET /v1/models/{id}`` (OpenAI's Models reference): the one served model."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from tenfold.serve.errors import model_not_found
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving

router = APIRouter()


def _card(s: Serving) -> dict:
    return {"id": s.model_name, "object": "model", "created": s.engine.started, "owned_by": "tenfold"}


@router.get("/v1/models")
async def models(s: Serving = Depends(serving)):
    return {"object": "list", "data": [_card(s)]}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, s: Serving = Depends(serving)):
    if model_id != s.model_name:
        raise model_not_found(model_id, s.model_name)
    return _card(s)
