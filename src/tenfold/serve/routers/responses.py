"""The Responses API (OpenAI's ``/v1/responses``) on sink-cache sessions.

- ``POST /v1/responses``: a response to ``input`` (+ ``instructions``), whole or streamed as semantic events.
- ``GET /v1/responses/{id}``, ``DELETE /v1/responses/{id}``, ``GET /v1/responses/{id}/input_items``: stored
  responses (``store: true``, the default), each key's own.
- ``POST /v1/responses/input_tokens``: how many tokens an input would take, without generating.

``previous_response_id`` continues a stored response: the conversation is the chain's turns plus the new input,
and it runs in the chain's sink-cache session. The newest response of a chain keeps the conversation's exact text
and token ids, so a follow-up tokenizes only its new text and the session feeds only its new tokens (``usage.
input_tokens_details.cached_tokens`` counts the rest). ``truncation: auto`` is what the sink cache does with a
conversation longer than the cache (the oldest tokens past the sinks are evicted); ``disabled`` refuses a prompt
that, with ``max_output_tokens``, would not fit the cache (``context_length_exceeded``). Without ``truncation`` the
server's ``--truncation`` applies (default ``auto``: this is a streaming-LLM server).
"""
from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Depends, Request

from tenfold.serve.engine import GenParams
from tenfold.serve.errors import APIError, model_not_found
from tenfold.serve.protocol.responses import InputTokensRequest, ResponsesRequest
from tenfold.serve.render_responses import ResponseRender, responses_usage
from tenfold.serve.response_store import StoredResponse
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving, disconnected, sse

router = APIRouter()


def _not_found(response_id: str, param: str | None = None) -> APIError:
    return APIError(404, f"no stored response {response_id!r} (responses are kept per API key while this server runs, "
                    "at most --max-stored-responses of them)", "not_found_error", param, "response_not_found")


class _Prompt:
    """A request's conversation: its messages, token ids, and how many of them a stored chain already holds."""

    def __init__(self, messages, new_messages, text, ids, reusable, keep):
        self.messages, self.new_messages, self.text, self.ids = messages, new_messages, text, ids
        self.reusable, self.keep = reusable, keep


async def _prompt(s: Serving, request: Request, req: ResponsesRequest, chain: list[StoredResponse]) -> _Prompt:
    """Render the conversation (instructions, the chain's turns, the new input) and tokenize what is new."""
    try:
        new = req.messages()
    except ValueError as exc:
        raise APIError(400, str(exc), param="input") from None
    head = [{"role": "system", "content": req.instructions}] if req.instructions else []
    s.check_chars(sum(len(m["content"]) for m in head + new), "input")
    s.prompts.check_control_tokens(head, "instructions")
    s.prompts.check_control_tokens(new, "input")
    s.prompts.check_tools(req.tools)
    messages = head + [m for r in chain for m in r.messages] + new
    if not messages:
        raise APIError(400, "there is nothing to respond to (no input, no instructions)", param="input")
    tools = req.tools or None
    last = chain[-1] if chain else None

    def render():
        if s.engine.vision is not None:  # the vision model builds its own prompt: no text to extend
            ids, rendered = s.prompts.ids(messages, tools, "input")
            return None, ids, 0, rendered
        text = s.prompts.text(messages, tools, "input")
        if last is not None and last.text is not None and text.startswith(last.text):
            return text, last.ids + s.prompts.encode(text[len(last.text):]), len(last.ids), messages
        return text, s.prompts.encode(text), 0, messages

    text, ids, reusable, rendered = await asyncio.to_thread(render)
    keep = 0
    if s.engine.keep_max and s.engine.vision is None:
        keep = await asyncio.to_thread(s.prompts.system_tokens, rendered)
    limit = s.settings.max_prompt_tokens
    if len(ids) - reusable > limit:
        raise APIError(400, f"the input is {len(ids) - reusable} new tokens; this server takes at most {limit} "
                       "(--max-prompt-tokens)", param="input", code="context_length_exceeded")
    return _Prompt(messages, new, text, ids, reusable, keep)


def _chain(s: Serving, request: Request, req) -> list[StoredResponse]:
    if req.previous_response_id is None:
        return []
    chain = s.responses.chain(s.tenant(request), req.previous_response_id)
    if chain is None:
        raise _not_found(req.previous_response_id, "previous_response_id")
    return chain


def _input_items(req: ResponsesRequest) -> list[dict]:
    items = [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": req.input}]}] \
        if isinstance(req.input, str) else list(req.input or [])
    prefixes = {"function_call": "fc", "function_call_output": "fco"}
    return [{**item, "id": item.get("id") or f"{prefixes.get(item.get('type'), 'msg')}_{uuid.uuid4().hex[:24]}"}
            for item in items]


@router.post("/v1/responses")
async def create_response(req: ResponsesRequest, request: Request, s: Serving = Depends(serving)):
    if req.model != s.model_name:
        raise model_not_found(req.model, s.model_name)
    s.refuse_unsupported(req.unsupported())
    chain = _chain(s, request, req)
    max_tokens = s.max_tokens(req.max_output_tokens, "max_output_tokens")
    temperature = 1.0 if req.temperature is None else req.temperature
    top_p = 1.0 if req.top_p is None else req.top_p
    params = GenParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
    tools = req.tools or None
    params.constraint = await s.constraint(req.format(), tools, req.tool_choice, req.parallel_tool_calls,
                                           format_param="text.format")
    prompt = await _prompt(s, request, req, chain)
    truncation = req.truncation or s.settings.truncation
    size = s.engine.config.size
    if truncation == "disabled" and len(prompt.ids) + max_tokens > size:
        raise APIError(400, f"the conversation is {len(prompt.ids)} tokens and max_output_tokens {max_tokens}; with "
                       f"truncation 'disabled' they must fit the cache of {size} tokens (send truncation 'auto' to let "
                       "the sink cache evict the oldest tokens)", param="input", code="context_length_exceeded")
    rid = f"resp_{uuid.uuid4().hex}"
    # The chain's session: the client's name for it, else the first stored response's id.
    sid = request.headers.get("x-session-id") or req.session_key() or \
        (chain[0].session if chain else (rid if req.store else None))
    run = s.submit([prompt.ids], params, s.session(request, sid, "prompt_cache_key"), keep=prompt.keep,
                   tenant=s.tenant(request))
    render = ResponseRender(rid, req, s.model_name, bool(tools) and req.tool_choice != "none", truncation,
                            temperature, top_p)

    def usage() -> dict:
        u = run.usage()
        return responses_usage(u["prompt_tokens"], u["completion_tokens"],
                               u["prompt_tokens_details"]["cached_tokens"])

    def store(final: dict, finish: str) -> None:
        if not req.store:
            return
        generated = run.jobs[0].choices[0].ids if run.jobs[0].choices else []
        exact = prompt.text is not None and finish != "abort" and \
            s.tok.decode(generated, skip_special_tokens=True) == render.text
        turn = prompt.new_messages + [{"role": "assistant", "content": render.text}]
        s.responses.put(s.tenant(request), StoredResponse(
            rid, final, turn, _input_items(req), req.previous_response_id, sid or rid,
            text=prompt.text + render.text if exact else None, ids=prompt.ids + list(generated) if exact else None))

    if req.stream:
        async def events():
            for event in render.start():
                yield event
            finish = "stop"
            try:
                async for _, delta, reason, _ in run.events():
                    for event in render.delta(delta):
                        yield event
                    finish = reason or finish
            except APIError as exc:
                for event in render.failed(exc.body()["error"]):
                    yield event
                return
            closing, final = render.finish(finish, usage())
            store(final, finish)
            for event in closing:
                yield event

        return sse(events(), run, done=None)
    done = await run.collect(request)
    if done is None:
        return disconnected()
    render.text = done.texts[0]
    events, final = render.finish(done.reasons[0], usage())
    store(final, done.reasons[0])
    return final


@router.post("/v1/responses/input_tokens")
async def input_tokens(req: InputTokensRequest, request: Request, s: Serving = Depends(serving)):
    if req.model is not None and req.model != s.model_name:
        raise model_not_found(req.model, s.model_name)
    s.refuse_unsupported(req.unsupported())
    prompt = await _prompt(s, request, req, _chain(s, request, req))
    return {"object": "response.input_tokens", "input_tokens": len(prompt.ids)}


@router.get("/v1/responses/{response_id}")
async def get_response(response_id: str, request: Request, s: Serving = Depends(serving)):
    found = s.responses.get(s.tenant(request), response_id)
    if found is None:
        raise _not_found(response_id)
    return found.body


@router.delete("/v1/responses/{response_id}")
async def delete_response(response_id: str, request: Request, s: Serving = Depends(serving)):
    if not s.responses.delete(s.tenant(request), response_id):
        raise _not_found(response_id)
    return {"id": response_id, "object": "response", "deleted": True}


@router.get("/v1/responses/{response_id}/input_items")
async def list_input_items(response_id: str, request: Request, order: str = "desc", limit: int = 20,
                           after: str | None = None, s: Serving = Depends(serving)):
    found = s.responses.get(s.tenant(request), response_id)
    if found is None:
        raise _not_found(response_id)
    if order not in ("asc", "desc"):
        raise APIError(400, "order must be 'asc' or 'desc'", param="order")
    if not 1 <= limit <= 100:
        raise APIError(400, "limit must be between 1 and 100", param="limit")
    items = found.input_items if order == "asc" else found.input_items[::-1]
    if after is not None:
        at = next((k for k, item in enumerate(items) if item["id"] == after), None)
        if at is None:
            raise APIError(400, f"after names no input item of this response: {after!r}", param="after")
        items = items[at + 1:]
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}

