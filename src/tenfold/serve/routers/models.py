"""``GET /v1/models`` and ``GET /v1/models/{id}`` (OpenAI's Models reference): the served model, and the embedding
model when there is one."""
from __future__ import annotations

from fastapi import APIRouter, Depends

from tenfold.serve.errors import model_not_found
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving

router = APIRouter()


def _card(s: Serving) -> dict:
    return {"id": s.model_name, "object": "model", "created": s.engine.started, "owned_by": "tenfold"}


def _cards(s: Serving) -> list[dict]:
    extra = [] if s.embeddings is None else [s.embeddings.card(s.engine.started)]
    return [_card(s), *extra]


@router.get("/v1/models")
async def models(s: Serving = Depends(serving)):
    return {"object": "list", "data": _cards(s)}


@router.get("/v1/models/{model_id:path}")
async def model(model_id: str, s: Serving = Depends(serving)):
    found = next((c for c in _cards(s) if c["id"] == model_id), None)
    if found is None:
        raise model_not_found(model_id, s.model_name)
    return found
