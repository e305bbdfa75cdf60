"""``POST /v1/completions`` (OpenAI's legacy Completions): text or token-id prompts, ``n``, ``echo``, ``logprobs``,
streamed as server-sent events or not."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request

from tenfold.serve.errors import APIError
from tenfold.serve.protocol.completions import CompletionRequest
from tenfold.serve.render import TextRender
from tenfold.serve.routers import include_usage, serving
from tenfold.serve.serving import Serving, disconnected, sse

router = APIRouter()


@router.post("/v1/completions")
async def completions(req: CompletionRequest, request: Request, s: Serving = Depends(serving)):
    params = s.check(req, req.max_tokens)
    if req.echo and req.stream:
        raise APIError(400, "echo is not supported with stream: true (send it without streaming)", param="echo",
                       code="unsupported_parameter")
    params.logprobs = req.logprobs
    params.prompt_logprobs = req.echo and req.logprobs is not None
    texts = [p for p in req.prompts() if isinstance(p, str)]
    for text in texts:
        s.check_chars(len(text), "prompt")
    encoded = iter(await asyncio.to_thread(lambda: [s.tok(t, add_special_tokens=False).input_ids for t in texts])
                   if texts else [])  # off the event loop (issue 38 D1)
    ids = []
    for p in req.prompts():
        if isinstance(p, str):
            ids.append(next(encoded))
        else:
            if max(p) >= s.vocab_size:
                raise APIError(400, f"token id {max(p)} is out of range (the vocabulary has {s.vocab_size} ids)",
                               param="prompt", code="invalid_token_id")
            ids.append(list(p))
    if any(not x for x in ids):
        raise APIError(400, "the prompt has no tokens", param="prompt")
    for x in ids:
        s.check_length(x, "prompt")
    render = TextRender(s.model_name, include_usage(req), s.token_text if req.logprobs is not None else None)
    # Scoring the prompt needs its logits, so a session's cached prefix cannot stand in for it.
    session = None if params.prompt_logprobs else s.session(request, req.session_key())
    run = s.submit(ids, params, session, tenant=s.tenant(request))
    rid = s.new_id(render.prefix)
    if req.stream:
        async def chunks():
            async for i, delta, reason, entries in run.events():
                yield render.chunk(rid, i, delta, reason, entries)
            summary = run.usage()  # counted into the metrics whether or not the client asked for it
            if render.include_usage:
                yield render.usage_chunk(rid, summary)

        return sse(chunks(), run)
    done = await run.collect(request)
    if done is None:
        return disconnected()
    if req.echo:  # each choice starts with its prompt (and the prompt's scores)
        echo = [p if isinstance(p, str) else s.tok.decode(p) for p in req.prompts()]
        render.echo = [(echo[i // params.n], run.jobs[i // params.n].prompt_logprobs) for i in range(run.choices)]
    return render.full(rid, done.texts, done.reasons, run.usage(), done.entries)
