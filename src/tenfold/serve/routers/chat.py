"""``POST /v1/chat/completions`` (OpenAI's Chat Completions): messages with images for a vision model, tools,
``response_format``, logprobs and ``n``, streamed as server-sent events or not; ``user`` or ``X-Session-Id``
continues a sink-cache session."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from tenfold.serve.chat_prompt import count_images
from tenfold.serve.errors import APIError
from tenfold.serve.protocol.chat import ChatRequest
from tenfold.serve.render import ChatRender
from tenfold.serve.routers import include_usage, serving
from tenfold.serve.serving import Serving, disconnected, sse

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(req: ChatRequest, request: Request, s: Serving = Depends(serving)):
    name = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
    params = s.check(req, req.max_completion_tokens or req.max_tokens, name)
    params.logprobs = (req.top_logprobs or 0) if req.logprobs else None
    count = count_images(req.messages)
    if count > s.settings.max_images:
        raise APIError(400, f"the messages hold {count} images; this server takes at most {s.settings.max_images} "
                       "per request (--max-images)", param="messages", code="too_many_images")
    if count:
        messages, images = await asyncio.to_thread(s.prompts.from_chat, req.messages)
    else:
        messages, images = s.prompts.from_chat(req.messages)
    tools = req.tools or None  # shown to the model even with tool_choice "none" (which only forbids calling)
    s.check_chars(sum(len(m["content"]) for m in messages), "messages")
    s.prompts.check_control_tokens(messages)
    s.prompts.check_tools(tools)
    params.constraint = await s.constraint(req.response_format, tools, req.tool_choice, req.parallel_tool_calls)
    ids, keep = await s.chat_ids(messages, tools, images)
    render = ChatRender(s.model_name, include_usage(req), s.token_text if req.logprobs else None,
                        tools=bool(tools) and req.tool_choice != "none")
    run = s.submit([ids], params, s.session(request, req.session_key()), images, keep=keep, tenant=s.tenant(request))
    rid = s.new_id(render.prefix)
    if req.stream:
        async def chunks():
            for i in range(run.choices):
                yield render.chunk(rid, i, None, None, start=True)
            async for i, delta, reason, entries in run.events():
                chunk = render.chunk(rid, i, delta, reason, entries)
                if chunk is not None:
                    yield chunk
            summary = run.usage()  # counted into the metrics whether or not the client asked for it
            if render.include_usage:
                yield render.usage_chunk(rid, summary)

        return sse(chunks(), run)
    done = await run.collect(request)
    if done is None:
        return disconnected()
    return render.full(rid, done.texts, done.reasons, run.usage(), done.entries)
