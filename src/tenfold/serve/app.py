"""The OpenAI-compatible HTTP API of ``tenfold serve`` (FastAPI), on top of :class:`~tenfold.serve.engine.Engine`.

Endpoints: ``GET /v1/models``, ``GET /v1/models/{id}``, ``POST /v1/chat/completions``, ``POST /v1/completions``
(both streamed as server-sent events or not), ``GET /health``, ``GET /metrics`` (Prometheus). Errors are OpenAI-style objects
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for bad requests and a JSON 500 for
anything unexpected. A request with ``user`` or an ``X-Session-Id`` header continues that session's sink cache;
with API keys, session ids live in the key's own namespace.

Layers, outermost first: :class:`~tenfold.serve.middleware.CatchAll`, ``RequestId``, Starlette's
``CORSMiddleware`` (with ``allowed_origins``), ``ApiKeys``, ``BodyLimit``, then the routes.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenfold.models.lm import chat_ids
from tenfold.models.quantize import weights_label
from tenfold.serve.engine import Engine, GenParams, Job
from tenfold.serve.middleware import ApiKeys, BodyLimit, CatchAll, RequestId, error_body, json_500, log
from tenfold.serve.logprobs import TokenText
from tenfold.serve.metrics import ServeMetrics
from tenfold.serve.render import ChatRender, TextRender, usage
from tenfold.serve.schemas import ChatRequest, CompletionRequest
from tenfold.serve.structured import GrammarError, Grammars, call_text, tools_prompt


@dataclass
class ServeSettings:
    """What a request may ask for, and who may ask (the ``tenfold serve`` flags of the same names)."""

    model_name: str
    max_tokens_cap: int = 2048
    default_max_tokens: int = 256
    max_prompt_tokens: int = 8192
    max_body_bytes: int = 1_000_000
    max_image_pixels: int = 4096 * 4096
    max_images: int = 4
    api_keys: list[str] = field(default_factory=list)
    allowed_origins: list[str] = field(default_factory=list)
    public_metrics: bool = False  # with API keys, /metrics needs a key unless this is set
    body_timeout: float = 15.0  # seconds a request body may stall between chunks (408 past it)


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code
        self.headers = headers


def _count_images(req: ChatRequest) -> int:
    return sum(1 for m in req.messages if isinstance(m.content, list) for p in m.content if p["type"] == "image_url")


def _vision_messages(req: ChatRequest, vision, max_pixels: int) -> tuple[list[dict], list]:
    """Chat messages as role/content dicts (image parts become the VLM's placeholder) and the decoded images.

    Runs in a worker thread: decoding images must not block the event loop.
    """
    from tenfold.serve.images import BadImage, decode_data_url

    placeholder = "<image>" if vision is None else vision.tokenizer.convert_ids_to_tokens(vision.image_token_id)
    messages, images = [], []
    for i, m in enumerate(req.messages):
        text, urls = m.text_and_images(placeholder)
        if urls and vision is None:
            raise APIError(400, "this server's model does not take images (start it with `tenfold serve --vlm DIR`)",
                           param=f"messages.{i}.content", code="images_not_supported")
        for url in urls:
            try:
                images.append(decode_data_url(url, max_pixels))
            except BadImage as exc:
                raise APIError(400, str(exc), param=f"messages.{i}.content", code="invalid_image") from None
        if m.tool_calls:  # an earlier assistant turn's calls, as the text the model wrote for them
            text = (text + "\n" if text else "") + call_text(m.tool_calls)
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return messages, images


def _with_tools(tok, messages: list[dict], tools: list[dict]) -> list[dict]:
    """Messages that tell the model about ``tools``: the chat template's own way when it renders them, else a
    system-prompt section (tenfold.serve.structured.tools_prompt)."""
    try:
        plain = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        native = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        if native != plain:
            return messages  # the template renders them; chat_ids is called with them below
    except Exception:  # noqa: BLE001 - a template without tool support
        pass
    section = tools_prompt(tools)
    if messages and messages[0]["role"] == "system":
        return [{"role": "system", "content": messages[0]["content"] + "\n\n" + section}, *messages[1:]]
    return [{"role": "system", "content": section}, *messages]


def create_app(engine: Engine, settings: ServeSettings):
    """The ASGI app: FastAPI routes wrapped in tenfold's middleware (see the module docstring for the order)."""
    app = FastAPI(title="tenfold serve", docs_url=None, redoc_url=None, exception_handlers={Exception: json_500})
    tok, s = engine.tok, settings
    model_name = s.model_name
    vocab_size = engine.model.get_input_embeddings().num_embeddings
    weights = weights_label(engine.model)
    token_text = TokenText(tok)
    grammars = Grammars(tok, vocab_size, engine.stop_ids)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid" or (not loc and first.get("type") in ("model_attributes_type", "dict_type")):
            return JSONResponse(error_body("the request body must be a JSON object", code="invalid_json"), status_code=400)
        message = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid request')}"
        return JSONResponse(error_body(message, param=".".join(loc) or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        type_ = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(error_body(str(exc.detail), type_), status_code=exc.status_code)

    metrics = ServeMetrics(engine)

    @app.get("/metrics")
    async def prometheus():
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/health")
    async def health(request: Request):
        brief = {"status": "ok", "model": model_name}
        if s.api_keys and request.scope.get("state", {}).get("tenant") is None and not _valid_key(request):
            return brief  # without a key: alive or not, nothing about other tenants' traffic
        return {**brief, "cache": engine.config.label(), "weights": weights, **engine.health()}

    def _valid_key(request: Request) -> bool:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and token.strip() in s.api_keys

    def _model_card():
        return {"id": model_name, "object": "model", "created": engine.started, "owned_by": "tenfold"}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [_model_card()]}

    @app.get("/v1/models/{model_id:path}")
    async def model(model_id: str):
        if model_id != model_name:
            raise APIError(404, f"the model {model_id!r} does not exist; this server serves {model_name!r}",
                           "not_found_error", "model", "model_not_found")
        return _model_card()

    def _check(req, max_tokens: int | None) -> GenParams:
        if req.model != model_name:
            raise APIError(404, f"the model {req.model!r} does not exist; this server serves {model_name!r}",
                           "not_found_error", "model", "model_not_found")
        field_ = req.unsupported()
        if field_ is not None:
            raise APIError(400, f"{field_} is not supported by this server (it would change the output, so it is "
                           "refused rather than ignored)", param=field_, code="unsupported_parameter")
        max_tokens = s.default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > s.max_tokens_cap:
            name = "max_completion_tokens" if getattr(req, "max_completion_tokens", None) is not None else "max_tokens"
            raise APIError(400, f"{name} is {max_tokens}, above this server's limit of {s.max_tokens_cap}",
                           param=name, code="max_tokens_too_large")
        return GenParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=list(req.stop or []),
                         seed=req.seed, n=req.n, top_k=max(req.top_k or 0, 0), min_p=req.min_p or 0.0,
                         repetition_penalty=1.0 if req.repetition_penalty is None else req.repetition_penalty,
                         presence_penalty=req.presence_penalty or 0.0, frequency_penalty=req.frequency_penalty or 0.0)

    def _check_length(ids: list[int], param: str) -> None:
        if len(ids) > s.max_prompt_tokens:
            raise APIError(400, f"the prompt is {len(ids)} tokens; this server takes at most {s.max_prompt_tokens} "
                           "(--max-prompt-tokens)", param=param, code="context_length_exceeded")

    def _session(request: Request, req) -> str | None:
        sid = request.headers.get("x-session-id") or req.user or None
        if sid is None:
            return None
        if len(sid) > 256:
            raise APIError(400, "a session id (X-Session-Id or user) is at most 256 characters", param="user")
        tenant = request.scope.get("state", {}).get("tenant") or ""
        return f"{tenant}/{sid}" if tenant else sid

    def _job_error(error: BaseException) -> APIError:
        if isinstance(error, Engine.OutOfCacheMemory):
            return APIError(503, str(error), "server_error", code="out_of_cache_memory", headers={"Retry-After": "5"})
        if isinstance(error, Engine.RequestTooLarge):
            return APIError(400, str(error), param="n", code="request_too_large")
        if isinstance(error, ValueError):  # e.g. GrammarError: the request's schema failed while generating
            return APIError(400, str(error))
        log.error("generation failed", exc_info=error)
        return APIError(500, f"generation failed: {error.__class__.__name__}", "server_error", code="internal_error")

    async def _run(request: Request, prompts: list[list[int]], params: GenParams, session: str | None, stream: bool,
                   render, images: list | None = None, echo: list[str] | None = None, keep: int = 0):
        """Submit one job per prompt; return a streaming response or the finished choices."""
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
                            images=images, keep=keep))
        try:
            engine.submit_all(jobs)
        except Engine.RequestTooLarge as exc:
            raise APIError(400, str(exc), param="prompt", code="request_too_large") from None
        except Engine.QueueFull as exc:
            for job in jobs:
                job.cancel()
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full", headers={"Retry-After": "1"}) from None
        except Engine.Unavailable as exc:
            for job in jobs:
                job.cancel()
            raise APIError(503, str(exc), "server_error", code="shutting_down") from None

        async def events():
            remaining = len(jobs)
            while remaining:
                kind, index, delta, reason, entries = await queue.get()
                if kind == "done":
                    remaining -= 1
                    if jobs[index].error is not None:
                        raise _job_error(jobs[index].error)
                else:
                    yield index, delta, reason, entries

        prompt_tokens = sum(len(ids) for ids in prompts)
        rid = f"{render.prefix}-{uuid.uuid4().hex[:24]}"

        counted = False

        def _usage():
            nonlocal counted
            completion = sum(j.completion_tokens for j in jobs)
            if not counted:
                counted = True
                metrics.tokens(prompt_tokens, completion)
            return usage(prompt_tokens, completion, sum(j.reused for j in jobs))

        if stream:
            async def sse():
                try:
                    for i in range(len(prompts) * params.n):
                        first = render.chunk(rid, i, None, None, start=True)
                        if first is not None:
                            yield f"data: {json.dumps(first)}\n\n"
                    async for i, delta, reason, entries in events():
                        chunk = render.chunk(rid, i, delta, reason, entries)
                        if chunk is not None:
                            yield f"data: {json.dumps(chunk)}\n\n"
                    summary = _usage()
                    if render.include_usage:
                        yield f"data: {json.dumps(render.usage_chunk(rid, summary))}\n\n"
                    yield "data: [DONE]\n\n"
                except APIError as exc:
                    yield f"data: {json.dumps(error_body(exc.message, exc.type, exc.param, exc.code))}\n\n"
                finally:
                    for job in jobs:
                        if not job.done.is_set():
                            job.cancel()  # the client went away (or the stream failed): free the slot

            return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        texts: dict[int, list[str]] = {}
        reasons: dict[int, str] = {}
        scored: dict[int, list] = {}

        async def collect():
            async for i, delta, reason, entries in events():
                texts.setdefault(i, []).append(delta)
                scored.setdefault(i, []).extend(entries)
                if reason is not None:
                    reasons[i] = reason

        task = asyncio.ensure_future(collect())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
                    break
        finally:
            for job in jobs:
                if not job.done.is_set():
                    job.cancel()
        if task.cancelled():
            return JSONResponse(error_body("client disconnected", code="cancelled"), status_code=499)
        if task.exception() is not None:
            exc = task.exception()
            raise exc if isinstance(exc, APIError) else _job_error(exc)
        choices = ["".join(texts.get(i, [])) for i in range(len(prompts) * params.n)]
        if echo is not None:  # completions echo: each choice starts with its prompt (and the prompt's scores)
            render.echo = [(echo[i // params.n], jobs[i // params.n].prompt_logprobs) for i in range(len(choices))]
        return render.full(rid, choices, [reasons.get(i, "stop") for i in range(len(choices))], _usage(),
                           [scored.get(i, []) for i in range(len(choices))])

    placeholder = None if engine.vision is None else tok.convert_ids_to_tokens(engine.vision.image_token_id)
    control = sorted({t for t in tok.all_special_tokens if len(t) > 2 and t != placeholder}, key=len, reverse=True)

    def _check_control_tokens(messages: list[dict]) -> None:
        """Chat content may not spell the template's control tokens (``<|im_start|>`` ...): the tokenizer would read
        them as real turn boundaries, letting a user forge system or assistant turns."""
        for i, m in enumerate(messages):
            found = next((t for t in control if t in m["content"]), None)
            if found is not None:
                raise APIError(400, f"message {i} contains the control token {found!r}, which would forge a turn of "
                               "the chat template; remove it", param=f"messages.{i}.content", code="control_token")

    def _system_tokens(messages: list[dict]) -> int:
        """Tokens of the rendered chat up to the end of its leading system message(s) (0 without one)."""
        lead = 0
        while lead < len(messages) and messages[lead]["role"] == "system":
            lead += 1
        if not lead:
            return 0
        try:
            return int(chat_ids(tok, messages[:lead], add_generation_prompt=False).shape[1])
        except Exception:  # noqa: BLE001 - a template that wants a user turn: keep nothing rather than fail
            return 0

    async def _constraint(req: ChatRequest, tools: list[dict] | None):
        """The grammar factory for ``response_format`` / ``tools`` (None when the output is free text)."""
        fmt = (req.response_format or {}).get("type", "text")
        if fmt != "text" and tools:
            raise APIError(400, "response_format and tools cannot be combined in one request", param="response_format",
                           code="unsupported_parameter")
        try:
            if fmt == "json_object":
                grammar = await asyncio.to_thread(grammars.json_grammar, None)
            elif fmt == "json_schema":
                schema = req.response_format["json_schema"].get("schema") or {"type": "object"}
                grammar = await asyncio.to_thread(grammars.json_grammar, schema)
            elif tools:
                grammar = await asyncio.to_thread(grammars.tools_grammar, tools, req.tool_choice, req.parallel_tool_calls)
            else:
                return None
        except GrammarError as exc:
            raise APIError(400, str(exc), param="tools" if tools else "response_format", code="invalid_schema") from None
        return grammars.factory(grammar) if grammar is not None else None

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        params = _check(req, req.max_completion_tokens or req.max_tokens)
        params.logprobs = (req.top_logprobs or 0) if req.logprobs else None
        count = _count_images(req)
        if count > s.max_images:
            raise APIError(400, f"the messages hold {count} images; this server takes at most {s.max_images} per "
                           "request (--max-images)", param="messages", code="too_many_images")
        if count:
            messages, images = await asyncio.to_thread(_vision_messages, req, engine.vision, s.max_image_pixels)
        else:
            messages, images = _vision_messages(req, engine.vision, s.max_image_pixels)
        tools = req.tools or None  # shown to the model even with tool_choice "none" (which only forbids calling)
        params.constraint = await _constraint(req, tools)
        if tools:
            messages = _with_tools(tok, messages, tools)
        try:
            if engine.vision is not None:
                ids = engine.vision.prompt_ids(messages)
            elif tools and getattr(tok, "chat_template", None):
                ids = list(tok.apply_chat_template(messages, tools=tools, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True)["input_ids"])
            else:
                ids = chat_ids(tok, messages)[0].tolist()
        except Exception as exc:  # noqa: BLE001 - a template that rejects the conversation
            raise APIError(400, f"cannot apply the chat template: {exc}", param="messages") from None
        if engine.vision is not None and engine.vision.count_images(ids) != len(images):
            raise APIError(400, f"the messages hold {len(images)} image(s) but {engine.vision.count_images(ids)} "
                           "image placeholder(s); do not write the placeholder text yourself", param="messages")
        _check_length(ids, "messages")
        _check_control_tokens(messages)
        render = ChatRender(model_name, _include_usage(req), token_text if req.logprobs else None,
                            tools=bool(tools) and req.tool_choice != "none")
        keep = _system_tokens(messages) if engine.keep_max and engine.vision is None else 0
        return await _run(request, [ids], params, _session(request, req), req.stream, render, images, keep=keep)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        params = _check(req, req.max_tokens)
        if req.echo and req.stream:
            raise APIError(400, "echo is not supported with stream: true (send it without streaming)", param="echo",
                           code="unsupported_parameter")
        params.logprobs = req.logprobs
        params.prompt_logprobs = req.echo and req.logprobs is not None
        ids = []
        for i, p in enumerate(req.prompts()):
            if isinstance(p, str):
                ids.append(tok(p, add_special_tokens=False).input_ids)
            else:
                if max(p) >= vocab_size:
                    raise APIError(400, f"token id {max(p)} is out of range (the vocabulary has {vocab_size} ids)",
                                   param="prompt", code="invalid_token_id")
                ids.append(list(p))
        if any(not x for x in ids):
            raise APIError(400, "the prompt has no tokens", param="prompt")
        for x in ids:
            _check_length(x, "prompt")
        render = TextRender(model_name, _include_usage(req), token_text if req.logprobs is not None else None)
        echo = None
        if req.echo:
            echo = [p if isinstance(p, str) else tok.decode(p) for p in req.prompts()]
        # Scoring the prompt needs its logits, so a session's cached prefix cannot stand in for it.
        session = None if params.prompt_logprobs else _session(request, req)
        return await _run(request, ids, params, session, req.stream, render, echo=echo)

    wrapped = BodyLimit(app, s.max_body_bytes, s.body_timeout)
    wrapped = ApiKeys(wrapped, s.api_keys, ("/health", "/metrics") if s.public_metrics else ("/health",))
    if s.allowed_origins:
        from starlette.middleware.cors import CORSMiddleware

        wrapped = CORSMiddleware(wrapped, allow_origins=s.allowed_origins, allow_methods=["GET", "POST", "OPTIONS"],
                                 allow_headers=["Authorization", "Content-Type", "X-Session-Id", "X-Request-Id"],
                                 expose_headers=["X-Request-Id"])
    return CatchAll(metrics.middleware(RequestId(wrapped)))


def _include_usage(req) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))
