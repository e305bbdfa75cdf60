"""The OpenAI-compatible HTTP API of ``tenfold serve`` (FastAPI), on top of :class:`~tenfold.serve.engine.Engine`.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions`` (both
streamed as server-sent events or not), ``GET /health``. Errors are OpenAI-style objects
``{"error": {"message", "type", "param", "code"}}`` with a 4xx status for bad requests.
A request with ``user`` or an ``X-Session-Id`` header continues that session's sink cache.
"""
from __future__ import annotations

import asyncio
import json
import time
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tenfold.models.lm import chat_ids
from tenfold.serve.engine import Engine, GenParams, Job
from tenfold.serve.schemas import ChatRequest, CompletionRequest


class APIError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type_, param, code


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None, code: str | None = None):
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class BodyLimit:
    """ASGI middleware: requests whose body exceeds ``max_bytes`` get 413 before any parsing."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        too_big = length is not None and length.isdigit() and int(length) > self.max_bytes
        seen = 0

        async def counted():
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    too_big = True
                    raise _TooBig()
            return message

        if not too_big:
            try:
                return await self.app(scope, counted, send)
            except _TooBig:
                pass
        response = JSONResponse(error_body(f"request body larger than {self.max_bytes} bytes", code="body_too_large"),
                                status_code=413)
        await response(scope, receive, send)


class _TooBig(Exception):
    pass


def _vision_messages(req: ChatRequest, vision, max_pixels: int) -> tuple[list[dict], list]:
    """Chat messages as role/content dicts (image parts become the VLM's placeholder) and the decoded images."""
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
        messages.append({"role": "system" if m.role == "developer" else m.role, "content": text})
    return messages, images


def create_app(engine: Engine, model_name: str, max_tokens_cap: int = 2048, default_max_tokens: int = 256,
               max_body_bytes: int = 1_000_000, max_image_pixels: int = 4096 * 4096) -> FastAPI:
    app = FastAPI(title="tenfold serve", docs_url=None, redoc_url=None)
    tok = engine.tok
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        return JSONResponse(error_body(exc.message, exc.type, exc.param, exc.code), status_code=exc.status)

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

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_name, "cache": f"{engine.num_sinks}+{engine.window}", **engine.health()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": created, "owned_by": "tenfold"}]}

    def _check(req, max_tokens: int | None) -> GenParams:
        if req.model != model_name:
            raise APIError(404, f"the model {req.model!r} does not exist; this server serves {model_name!r}",
                           "not_found_error", "model", "model_not_found")
        max_tokens = default_max_tokens if max_tokens is None else max_tokens
        if max_tokens > max_tokens_cap:
            raise APIError(400, f"max_tokens is {max_tokens}, above this server's limit of {max_tokens_cap}",
                           param="max_tokens", code="max_tokens_too_large")
        return GenParams(max_tokens=max_tokens, temperature=req.temperature, top_p=req.top_p, stop=list(req.stop or []),
                         seed=req.seed, n=req.n)

    def _session(request: Request, req) -> str | None:
        return request.headers.get("x-session-id") or req.user or None

    async def _run(request: Request, prompts: list[list[int]], params: GenParams, session: str | None, stream: bool,
                   render, images: list | None = None):
        """Submit one job per prompt; return a streaming response or the finished choices."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        jobs = []
        for p, ids in enumerate(prompts):
            offset = p * params.n

            def emit(i, delta, reason, offset=offset):
                loop.call_soon_threadsafe(queue.put_nowait, ("delta", offset + i, delta, reason))

            def done(p=p):
                loop.call_soon_threadsafe(queue.put_nowait, ("done", p, None, None))

            jobs.append(Job(ids, params, session_id=session if len(prompts) == 1 else None, emit=emit, on_done=done,
                            images=images))
        try:
            for job in jobs:
                engine.submit(job)
        except Engine.QueueFull as exc:
            for job in jobs:
                job.cancel()
            raise APIError(429, str(exc), "rate_limit_error", code="queue_full") from None

        async def events():
            remaining = len(jobs)
            while remaining:
                kind, index, delta, reason = await queue.get()
                if kind == "done":
                    remaining -= 1
                    if jobs[index].error is not None:
                        raise RuntimeError(f"generation failed: {jobs[index].error}")
                else:
                    yield index, delta, reason

        prompt_tokens = sum(len(ids) for ids in prompts)
        rid = f"{render.prefix}-{uuid.uuid4().hex[:24]}"
        if stream:
            async def sse():
                try:
                    for i in range(len(prompts) * params.n):
                        first = render.chunk(rid, i, None, None, start=True)
                        if first is not None:
                            yield f"data: {json.dumps(first)}\n\n"
                    async for i, delta, reason in events():
                        yield f"data: {json.dumps(render.chunk(rid, i, delta, reason))}\n\n"
                    if render.include_usage:
                        completion = sum(j.completion_tokens for j in jobs)
                        yield f"data: {json.dumps(render.usage_chunk(rid, prompt_tokens, completion, jobs))}\n\n"
                    yield "data: [DONE]\n\n"
                except RuntimeError as exc:
                    yield f"data: {json.dumps(error_body(str(exc), 'server_error'))}\n\n"
                finally:
                    for job in jobs:
                        if not job.done.is_set():
                            job.cancel()  # the client went away (or the stream failed): free the slot

            return StreamingResponse(sse(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

        texts: dict[int, list[str]] = {}
        reasons: dict[int, str] = {}

        async def collect():
            async for i, delta, reason in events():
                texts.setdefault(i, []).append(delta)
                if reason is not None:
                    reasons[i] = reason

        task = asyncio.ensure_future(collect())
        try:
            while not task.done():
                await asyncio.wait({task}, timeout=0.5)
                if not task.done() and await request.is_disconnected():
                    task.cancel()
                    break
        finally:
            for job in jobs:
                if not job.done.is_set():
                    job.cancel()
        if task.cancelled():
            return JSONResponse(error_body("client disconnected", code="cancelled"), status_code=499)
        if task.exception() is not None:
            raise APIError(500, str(task.exception()), "server_error")
        choices = ["".join(texts.get(i, [])) for i in range(len(prompts) * params.n)]
        completion = sum(j.completion_tokens for j in jobs)
        return render.full(rid, choices, [reasons.get(i, "stop") for i in range(len(choices))],
                           _usage(prompt_tokens, completion, jobs))

    @app.post("/v1/chat/completions")
    async def chat_completions(req: ChatRequest, request: Request):
        params = _check(req, req.max_completion_tokens or req.max_tokens)
        messages, images = _vision_messages(req, engine.vision, max_image_pixels)
        try:
            ids = engine.vision.prompt_ids(messages) if engine.vision is not None else chat_ids(tok, messages)[0].tolist()
        except Exception as exc:  # noqa: BLE001 - a template that rejects the conversation
            raise APIError(400, f"cannot apply the chat template: {exc}", param="messages") from None
        if engine.vision is not None and engine.vision.count_images(ids) != len(images):
            raise APIError(400, f"the messages hold {len(images)} image(s) but {engine.vision.count_images(ids)} "
                           "image placeholder(s); do not write the placeholder text yourself", param="messages")
        render = _ChatRender(model_name, created, _include_usage(req))
        return await _run(request, [ids], params, _session(request, req), req.stream, render, images)

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest, request: Request):
        params = _check(req, req.max_tokens)
        prompts = [req.prompt] if isinstance(req.prompt, str) else req.prompt
        ids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
        if any(not x for x in ids):
            raise APIError(400, "the prompt has no tokens", param="prompt")
        render = _TextRender(model_name, created, _include_usage(req))
        return await _run(request, ids, params, _session(request, req), req.stream, render)

    return BodyLimit(app, max_body_bytes)


def _include_usage(req) -> bool:
    return bool((req.stream_options or {}).get("include_usage"))


def _usage(prompt: int, completion: int, jobs: list[Job]) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(j.reused for j in jobs)}}


class _ChatRender:
    prefix, chunk_object = "chatcmpl", "chat.completion.chunk"

    def __init__(self, model: str, created: int, include_usage: bool):
        self.model, self.created, self.include_usage = model, created, include_usage

    def _base(self, rid, obj):
        return {"id": rid, "object": obj, "created": self.created, "model": self.model}

    def chunk(self, rid, i, delta, reason, start=False):
        d = {"role": "assistant", "content": ""} if start else ({"content": delta} if delta else {})
        return {**self._base(rid, "chat.completion.chunk"),
                "choices": [{"index": i, "delta": d, "logprobs": None, "finish_reason": reason}]}

    def usage_chunk(self, rid, prompt, completion, jobs):
        return {**self._base(rid, self.chunk_object), "choices": [], "usage": _usage(prompt, completion, jobs)}

    def full(self, rid, texts, reasons, usage):
        return {**self._base(rid, "chat.completion"), "usage": usage,
                "choices": [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                             "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]}


class _TextRender(_ChatRender):
    prefix, chunk_object = "cmpl", "text_completion"

    def chunk(self, rid, i, delta, reason, start=False):
        if start:
            return None
        return {**self._base(rid, "text_completion"),
                "choices": [{"index": i, "text": delta, "logprobs": None, "finish_reason": reason}]}

    def full(self, rid, texts, reasons, usage):
        return {**self._base(rid, "text_completion"), "usage": usage,
                "choices": [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                            for i, (t, r) in enumerate(zip(texts, reasons))]}
