"""``GET /v1/sessions/{id}/cache``: what a sink-cache session still holds (StreamingLLM, Xiao et al. 2023, Sec. 3.2:
attention sinks + a rolling window), for the chat page and for anyone who wants to see it.

Asked while a request is using the session, it answers a snapshot taken between the engine's steps
(``busy: true``), which the chat page polls to show the cache live. The session id is the client's (``X-Session-Id``, ``prompt_cache_key``, ``user``), inside the caller's API-key
namespace, so a key only ever sees its own sessions. The answer holds counts and the conversation's text as three
spans in stream order: ``sink`` (the first tokens, or the system prompt pinned by ``--keep system``), ``evicted``
(gone from the cache) and ``window`` (the most recent tokens the model still attends to).
"""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tenfold.serve.errors import APIError
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving

router = APIRouter()


@router.get("/v1/sessions/{session_id}/cache")
async def session_cache(session_id: str, request: Request, s: Serving = Depends(serving)):
    sid = s.session(request, session_id, "session_id")
    state = s.engine.session_state(sid)
    if state is None:
        raise APIError(404, f"no session {session_id!r} (sessions are kept per API key while they are used; idle "
                       "ones expire)", "not_found_error", "session_id", "session_not_found")
    # While a request uses the session the snapshot is live: read between the engine's steps, it may trail the
    # stream by one step (``busy`` says so).
    ids, sinks, evicted = state["ids"], state["sinks"], state["evicted"]
    sinks, evicted = min(sinks, len(ids)), max(0, min(evicted, len(ids) - min(sinks, len(ids))))
    cuts = [(0, sinks, "sink"), (sinks, sinks + evicted, "evicted"), (sinks + evicted, len(ids), "window")]
    spans = [{"state": kind, "tokens": b - a, "text": s.tok.decode(ids[a:b])} for a, b, kind in cuts if b > a]
    held = state["tokens_seen"] - evicted
    return {"object": "session.cache", "id": session_id, "busy": state["busy"], "tokens_seen": state["tokens_seen"],
            "evicted": evicted,
            "sinks": sinks, "window": state["window"], "in_cache": held,
            "fill": round(held / (sinks + state["window"]), 4) if sinks + state["window"] else 0.0,
            "memory_bytes": state["memory_bytes"], "spans": spans}
