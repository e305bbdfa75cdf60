"""Anthropic's Messages API: ``POST /v1/messages`` (whole or streamed) and ``POST /v1/messages/count_tokens``, as
llama.cpp server and vLLM serve them, so the anthropic SDK and tools built on it work against a local server.
``X-Session-Id`` or ``metadata.user_id`` continues a sink-cache session (only the new turn is fed; its usage says
how much was read from the session as ``cache_read_input_tokens``). Errors are Anthropic-shaped
(:func:`tenfold.serve.render_anthropic.anthropic_error`)."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from tenfold.serve.engine import GenParams
from tenfold.serve.errors import APIError, model_not_found
from tenfold.serve.protocol.anthropic import CountTokensRequest, MessagesRequest
from tenfold.serve.render_anthropic import MessageRender, anthropic_usage
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving, disconnected, sse

router = APIRouter()


async def _prompt(s: Serving, req: MessagesRequest) -> tuple[list[int], int]:
    if req.model != s.model_name:
        raise model_not_found(req.model, s.model_name)
    s.refuse_unsupported(req.unsupported())
    try:
        messages = req.plain_messages()
    except ValueError as exc:
        raise APIError(400, str(exc), param="messages") from None
    s.check_chars(sum(len(m["content"]) for m in messages), "messages")
    s.prompts.check_control_tokens(messages)
    s.prompts.check_tools(req.tools)
    return await s.chat_ids(messages, req.tools or None)


def _stop_sequence(s: Serving, run, text: str, stops: list[str]) -> str | None:
    """The stop sequence that ended the text, if one did (the engine cut the text where it began)."""
    ids = run.jobs[0].choices[0].ids if run.jobs[0].choices else []
    rest = s.tok.decode(ids, skip_special_tokens=True)[len(text):]
    return next((stop for stop in stops if rest.startswith(stop)), None)


@router.post("/v1/messages")
async def messages(req: MessagesRequest, request: Request, s: Serving = Depends(serving)):
    max_tokens = s.max_tokens(req.max_tokens, "max_tokens")
    params = GenParams(max_tokens=max_tokens, temperature=1.0 if req.temperature is None else req.temperature,
                       top_p=1.0 if req.top_p is None else req.top_p, top_k=req.top_k or 0,
                       stop=list(req.stop_sequences or []))
    tools = req.tools or None
    choice = req.openai_tool_choice()
    ids, keep = await _prompt(s, req)
    params.constraint = await s.constraint(req.format(), tools, choice, req.parallel, format_param="output_config")
    run = s.submit([ids], params, s.session(request, req.session_key(), "metadata.user_id"), keep=keep,
                   tenant=s.tenant(request))
    render = MessageRender(s.model_name, bool(tools) and choice != "none", params.stop)

    def usage() -> dict:
        u = run.usage()
        return anthropic_usage(u["prompt_tokens"], u["completion_tokens"], u["prompt_tokens_details"]["cached_tokens"])

    if req.stream:
        async def events():
            for event in render.start(anthropic_usage(len(ids), 0, 0)):
                yield event
            finish = "stop"
            try:
                async for _, delta, reason, _ in run.events():
                    for event in render.delta(delta):
                        yield event
                    finish = reason or finish
            except APIError as exc:
                for event in render.failed(exc.status, exc.message):
                    yield event
                return
            if finish == "abort":  # the server is shutting down: not an ordinary ending
                for event in render.failed(503, "the server is shutting down; this answer was cut off"):
                    yield event
                return
            stop = _stop_sequence(s, run, render.text, params.stop) if finish == "stop" else None
            for event in render.finish(finish, stop, usage()):
                yield event

        return sse(events(), run, done=None)
    done = await run.collect(request)
    if done is None:
        return disconnected()
    text, finish = done.texts[0], done.reasons[0]
    if finish == "abort":
        raise APIError(503, "the server is shutting down; this answer was cut off", "server_error",
                       code="shutting_down", headers={"Retry-After": "5"})
    stop = _stop_sequence(s, run, text, params.stop) if finish == "stop" else None
    return render.full(text, finish, stop, usage())


@router.post("/v1/messages/count_tokens")
async def count_tokens(req: CountTokensRequest, s: Serving = Depends(serving)):
    ids, _ = await _prompt(s, req)
    return {"input_tokens": len(ids)}
