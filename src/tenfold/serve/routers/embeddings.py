"""``POST /v1/embeddings`` (OpenAI's Embeddings API) and vLLM's ``POST /tokenize`` / ``POST /detokenize`` for the
chat model's tokenizer."""
from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends

from tenfold.serve.errors import APIError, model_not_found
from tenfold.serve.embeddings import encode_vector
from tenfold.serve.protocol.common import function_tool
from tenfold.serve.protocol.embeddings import DetokenizeRequest, EmbeddingRequest, TokenizeRequest
from tenfold.serve.routers import serving
from tenfold.serve.serving import Serving

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(req: EmbeddingRequest, s: Serving = Depends(serving)):
    service = s.embeddings
    if service is None:
        raise APIError(404, "this server has no embedding model (it was started with --embedding-model none)",
                       "not_found_error", "model", "model_not_found")
    if req.model != service.name:
        raise model_not_found(req.model, service.name)
    s.refuse_unsupported(req.unsupported())
    if req.dimensions is not None and req.dimensions != service.embedder.dim:
        raise APIError(400, f"{service.name} gives {service.embedder.dim} dimensions; it was not trained to be cut "
                       "shorter", param="dimensions", code="unsupported_parameter")
    s.check_chars(max(len(t) for t in req.input), "input")
    vectors, tokens = await asyncio.to_thread(service.embed, req.input)
    return {"object": "list", "model": service.name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": [{"object": "embedding", "index": i, "embedding": encode_vector(v, req.encoding_format)}
                     for i, v in enumerate(vectors)]}


def _check_model(s: Serving, model: str | None) -> None:
    if model is not None and model != s.model_name:
        raise model_not_found(model, s.model_name)


@router.post("/tokenize")
async def tokenize(req: TokenizeRequest, s: Serving = Depends(serving)):
    """vLLM's shape: ``{"count", "max_model_len", "tokens", "token_strs"}``; ``max_model_len`` is the most prompt
    tokens one request may send (``--max-prompt-tokens``): the sink cache takes conversations of any length."""
    _check_model(s, req.model)
    if req.prompt is not None:
        special = True if req.add_special_tokens is None else req.add_special_tokens
        ids = await asyncio.to_thread(lambda: s.tok(req.prompt, add_special_tokens=special).input_ids)
    else:
        from tenfold.serve.protocol.chat import Message

        try:
            messages = [Message.model_validate(m) for m in req.messages]
            tools = [function_tool(t.get("function", {}).get("name"), t.get("function", {}).get("description"),
                                   t.get("function", {}).get("parameters"), f"tools.{i}")
                     for i, t in enumerate(req.tools or [])] or None
        except (ValueError, AttributeError) as exc:
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            detail = lines[2] if len(lines) > 2 and "validation error" in lines[0] else lines[0] if lines else "invalid"
            raise APIError(400, f"messages: {detail[:300]}", param="messages") from None
        plain, _ = s.prompts.from_chat(messages)
        if s.engine.vision is not None:
            raise APIError(400, "tokenize messages is not served for a vision model; send prompt", param="messages")
        text = await asyncio.to_thread(s.prompts.text, plain, tools, "messages", req.add_generation_prompt)
        special = False if req.add_special_tokens is None else req.add_special_tokens
        ids = await asyncio.to_thread(lambda: s.tok(text, add_special_tokens=special).input_ids)
    body = {"count": len(ids), "max_model_len": s.settings.max_prompt_tokens, "tokens": ids, "token_strs": None}
    if req.return_token_strs:
        body["token_strs"] = s.tok.convert_ids_to_tokens(ids)
    return body


@router.post("/detokenize")
async def detokenize(req: DetokenizeRequest, s: Serving = Depends(serving)):
    _check_model(s, req.model)
    bad = next((t for t in req.tokens if t >= s.vocab_size), None)
    if bad is not None:
        raise APIError(400, f"token id {bad} is out of range (the vocabulary has {s.vocab_size} ids)",
                       param="tokens", code="invalid_token_id")
    return {"prompt": s.tok.decode(req.tokens)}
