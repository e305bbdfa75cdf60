"""The serving layer between the HTTP routers and the :class:`~tenfold.serve.engine.Engine` (vLLM's
``OpenAIServing`` plays the same part).

:class:`Serving` holds what every endpoint shares: the request checks (model name, refused fields, token limits),
session naming within an API key's namespace, the grammar for structured output, and :meth:`Serving.submit`, which
queues one engine job per prompt and returns a :class:`Run`. A router then either streams the run's events
(:meth:`Run.events`) in its own protocol's shape or collects them (:meth:`Run.collect`).
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from tenfold.models.quantize import weights_label
from tenfold.serve.chat_prompt import ChatPrompts
from tenfold.serve.engine import Engine, GenParams, Job
from tenfold.serve.errors import APIError, model_not_found
from tenfold.serve.logprobs import TokenText
from tenfold.serve.metrics import ServeMetrics
from tenfold.serve.middleware import error_body, log
from tenfold.serve.render import usage
from tenfold.serve.response_store import ResponseStore
from tenfold.serve.settings import ServeSettings
from tenfold.serve.structured import GrammarError, Grammars


def longest_token_chars(tok) -> int:
    """Characters in the tokenizer's longest token (the most text one prompt token can stand for)."""
    pieces = tok.convert_ids_to_tokens(list(range(len(tok))))
    return max(1, max(len(tok.convert_tokens_to_string([p])) for p in pieces if p is not None))


def job_error(error: BaseException) -> APIError:
    """The HTTP error for a job that failed inside the engine."""
    if isinstance(error, Engine.OutOfCacheMemory):
        return APIError(503, str(error), "server_error", code="out_of_cache_memory", headers={"Retry-After": "5"})
    if isinstance(error, Engine.RequestTooLarge):
        return APIError(400, str(error), param="n", code="request_too_large")
    if isinstance(error, ValueError):  # e.g. GrammarError: the request's schema failed while generating
        return APIError(400, str(error))
    log.error("generation failed", exc_info=error)
    return APIError(500, f"generation failed: {error.__class__.__name__}", "server_error", code="internal_error")


@dataclass
class Collected:
    """A finished run: per choice (prompt-major, then ``n``), its text, finish reason and scored tokens."""

    texts: list[str]
    reasons: list[str]
    entries: list[list]


@dataclass
class Run:
    """The engine jobs of one request and the queue their events arrive on (from the engine's worker thread)."""

    jobs: list[Job]
    queue: asyncio.Queue
    n: int
    prompt_tokens: int
    metrics: ServeMetrics
    _counted: bool = field(default=False, repr=False)

    @property
    def choices(self) -> int:
        return len(self.jobs) * self.n

    async def events(self):
        """Yield ``(choice index, text delta, finish reason or None, logprob entries)`` until every job ends;
        raises the APIError of a job that failed."""
        remaining = len(self.jobs)
        while remaining:
            kind, index, delta, reason, entries = await self.queue.get()
            if kind == "done":
                remaining -= 1
                if self.jobs[index].error is not None:
                    raise job_error(self.jobs[index].error)
            else:
                yield index, delta, reason, entries

    def usage(self) -> dict:
        """Chat Completions ``usage`` (counted into the token metrics once)."""
        completion = sum(j.completion_tokens for j in self.jobs)
        if not self._counted:
            self._counted = True
            self.metrics.tokens(self.prompt_tokens, completion)
        return usage(self.prompt_tokens, completion, sum(j.reused for j in self.jobs))

    def cancel_unfinished(self) -> None:
        for job in self.jobs:
            if not job.done.is_set():
                job.cancel()  # the client went away (or the stream failed): free the slot

    async def collect(self, request: Request) -> Collected | None:
        """Wait for every choice to finish; None when the client disconnected first (its jobs are cancelled)."""
        texts: dict[int, list[str]] = {}
        reasons: dict[int, str] = {}
        scored: dict[int, list] = {}

        async def gather():
            async for i, delta, reason, entries in self.events():
                texts.setdefault(i, []).append(delta)
                scored.setdefault(i, []).extend(entries)
                if reason is not None:
                    reasons[i] = reason

        task = asyncio.ensure_future(gather())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    break
        finally:
            self.cancel_unfinished()
        if task.cancelled():
            return None
        if task.exception() is not None:
            exc = task.exception()
            raise exc if isinstance(exc, APIError) else job_error(exc)
        k = range(self.choices)
        return Collected(["".join(texts.get(i, [])) for i in k], [reasons.get(i, "stop") for i in k],
                         [scored.get(i, []) for i in k])


def disconnected() -> JSONResponse:
    return JSONResponse(error_body("client disconnected", code="cancelled"), status_code=499)


def sse(events, run: Run, done: str | None = "[DONE]") -> StreamingResponse:
    """Server-sent events from an async iterator of JSON-able dicts (``(event name, dict)`` pairs give named
    events); an APIError mid-stream becomes a last ``error`` event. The run's unfinished jobs are cancelled when the
    stream ends for any reason (client gone included)."""

    async def body():
        try:
            async for item in events:
                name, data = item if isinstance(item, tuple) else (None, item)
                yield (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
            if done is not None:
                yield f"data: {done}\n\n"
        except APIError as exc:
            yield f"data: {json.dumps(exc.body())}\n\n"
        finally:
            run.cancel_unfinished()

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


class Serving:
    """What every endpoint shares; one per app, in ``app.state.serving``."""

    def __init__(self, engine: Engine, settings: ServeSettings, embeddings=None):
        """``embeddings``: an :class:`~tenfold.serve.embeddings.EmbeddingService` for ``/v1/embeddings``, or None."""
        self.engine, self.settings, self.tok = engine, settings, engine.tok
        self.embeddings = embeddings
        self.model_name = settings.model_name
        self.vocab_size = engine.model.get_input_embeddings().num_embeddings
        self.weights = weights_label(engine.model)
        self.token_text = TokenText(self.tok)
        self.grammars = Grammars(self.tok, self.vocab_size, engine.stop_ids)
        self.prompts = ChatPrompts(self.tok, engine.vision, settings.max_image_pixels)
        self.metrics = ServeMetrics(engine)
        self.responses = ResponseStore(settings.max_stored_responses)
        # A text longer than this many characters cannot fit --max-prompt-tokens, whatever its tokens: refused
        # before it is tokenized (issue 38 D1: 900 KB prompts held the event loop for seconds, then got a 400).
        self.char_limit = settings.max_prompt_tokens * longest_token_chars(self.tok)

    # -- checks ------------------------------------------------------------------------------
    def check(self, req, max_tokens: int | None, max_tokens_name: str = "max_tokens") -> GenParams:
        """Sampling parameters for ``req`` (Chat Completions / Completions shaped); APIError for a wrong model, a
        refused field or too many tokens."""
        if req.model != self.model_name:
            raise model_not_found(req.model, self.model_name)
        self.refuse_unsupported(req.unsupported())
        max_tokens = self.max_tokens(max_tokens, max_tokens_name)
        if (req.min_tokens or 0) > max_tokens:
            raise APIError(400, f"min_tokens ({req.min_tokens}) must be at most {max_tokens_name} ({max_tokens})",
                           param="min_tokens")
        return GenParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=list(req.stop or []),
                         min_tokens=req.min_tokens or 0,
                         seed=req.seed, n=req.n, top_k=max(req.top_k or 0, 0), min_p=req.min_p or 0.0,
                         repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
                         presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0)

    @staticmethod
    def refuse_unsupported(field_: str | None) -> None:
        if field_ is not None:
            raise APIError(400, f"{field_} is not supported by this server (it would change the output, so it is "
                           "refused rather than ignored)", param=field_, code="unsupported_parameter")

    def max_tokens(self, asked: int | None, name: str) -> int:
        """``asked`` or the server's default; APIError above ``--max-tokens-cap``."""
        value = self.settings.default_max_tokens if asked is None else asked
        if value > self.settings.max_tokens_cap:
            raise APIError(400, f"{name} is {value}, above this server's limit of {self.settings.max_tokens_cap}",
                           param=name, code="max_tokens_too_large")
        return value

    def check_chars(self, chars: int, param: str) -> None:
        """APIError 400 when ``chars`` characters of prompt text cannot fit ``--max-prompt-tokens`` tokens."""
        if chars > self.char_limit:
            raise APIError(400, f"the prompt is {chars} characters, more than {self.settings.max_prompt_tokens} tokens "
                           "(--max-prompt-tokens) can hold", param=param, code="context_length_exceeded")

    def check_length(self, ids: list[int], param: str) -> None:
        limit = self.settings.max_prompt_tokens
        if len(ids) > limit:
            raise APIError(400, f"the prompt is {len(ids)} tokens; this server takes at most {limit} "
                           "(--max-prompt-tokens)", param=param, code="context_length_exceeded")

    @staticmethod
    def tenant(request: Request) -> str:
        """The API key's namespace ("" without keys)."""
        return request.scope.get("state", {}).get("tenant") or ""

    def session(self, request: Request, sid: str | None, param: str = "user") -> str | None:
        """The engine's session id for the client's ``sid`` (``prompt_cache_key`` or ``user``; an ``X-Session-Id``
        header wins), inside the API key's namespace; None without one."""
        sid = request.headers.get("x-session-id") or sid or None
        if sid is None:
            return None
        if len(sid) > 256:
            raise APIError(400, "a session id (X-Session-Id, prompt_cache_key or user) is at most 256 characters", param=param)
        tenant = request.scope.get("state", {}).get("tenant") or ""
        return f"{tenant}/{sid}" if tenant else sid

    async def chat_ids(self, messages: list[dict], tools: list[dict] | None, images: list | None = None,
                       param: str = "messages") -> tuple[list[int], int]:
        """The chat prompt's token ids and how many of them ``--keep system`` holds, rendered in a worker thread
        (issue 38 D1: never on the event loop); APIError for a template failure, a wrong image count or a prompt
        over ``--max-prompt-tokens``."""
        def render():
            ids, rendered = self.prompts.ids(messages, tools, param)
            keep = self.prompts.system_tokens(rendered) if self.engine.keep_max and self.engine.vision is None else 0
            return ids, keep

        ids, keep = await asyncio.to_thread(render)
        self.prompts.check_images(ids, images or [])
        self.check_length(ids, param)
        return ids, keep

    async def constraint(self, fmt: dict | None, tools: list[dict] | None, tool_choice, parallel: bool,
                         format_param: str = "response_format"):
        """The grammar factory for a response format (``{"type": "text" | "json_object" | "json_schema", ...}``,
        Chat Completions' shape) or for ``tools`` under ``tool_choice``; None when the output is free text."""
        kind = (fmt or {}).get("type", "text")
        if kind != "text" and tools:
            raise APIError(400, f"{format_param} and tools cannot be combined in one request", param=format_param,
                           code="unsupported_parameter")
        try:
            if kind == "json_object":
                grammar = await asyncio.to_thread(self.grammars.json_grammar, None)
            elif kind == "json_schema":
                schema = fmt["json_schema"].get("schema") or {"type": "object"}
                grammar = await asyncio.to_thread(self.grammars.json_grammar, schema)
            elif tools:
                grammar = await asyncio.to_thread(self.grammars.tools_grammar, tools, tool_choice, parallel)
            else:
                return None
        except GrammarError as exc:
            raise APIError(400, str(exc), param="tools" if tools else format_param, code="invalid_schema") from None
        return self.grammars.factory(grammar) if grammar is not None else None

    # -- running -----------------------------------------------------------------------------
    def submit(self, prompts: list[list[int]], params: GenParams, session: str | None, images: list | None = None,
               keep: int = 0, tenant: str = "") -> Run:
        """Queue one job per prompt (all or none); APIError 400 / 429 / 503 when the engine cannot take them."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for p, ids in enumerate(prompts):
            offset = p * params.n

            def emit(i, delta, reason, entries, offset=offset):
                loop.call_soon_threadsafe(queue.put_nowait, ("delta", offset + i, delta, reason, entries))

            def done(p=p):
                loop.call_soon_threadsafe(queue.put_nowait, ("done", p, None, None, None))

            jobs.append(Job(ids, params, session_id=session if len(prompts) == 1 else None, emit=emit, on_done=done,
                            images=images, keep=keep, tenant=tenant))
        try:
            self.engine.submit_all(jobs)
        except Engine.RequestTooLarge as exc:
            raise APIError(400, str(exc), param="prompt", code="request_too_large") from None
        except Engine.QueueFull as exc:
            for job in jobs:
                job.cancel()
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None
        except Engine.Unavailable as exc:
            for job in jobs:
                job.cancel()
            raise APIError(503, str(exc), "server_error", code="shutting_down", headers={"Retry-After": "5"}) from None
        return Run(jobs, queue, params.n, sum(len(ids) for ids in prompts), self.metrics)

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:24]}"
