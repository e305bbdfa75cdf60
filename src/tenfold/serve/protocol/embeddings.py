"""``POST /v1/embeddings`` request bodies (OpenAI's Embeddings reference) and vLLM's ``/tokenize`` and
``/detokenize`` bodies."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from tenfold.serve.protocol.common import Body, first_unsupported

MAX_INPUTS = 2048  # OpenAI's limit on inputs per request


class EmbeddingRequest(Body):
    """``input``: a string or a list of strings (token-id input is refused: ids of another tokenizer, such as the
    tiktoken ids LangChain's ``OpenAIEmbeddings`` sends by default, would embed garbage)."""

    model: str
    input: str | list
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = Field(default=None, max_length=256)

    @field_validator("input")
    @classmethod
    def _texts(cls, value):
        texts = [value] if isinstance(value, str) else value
        if not texts:
            raise ValueError("input must not be empty")
        if len(texts) > MAX_INPUTS:
            raise ValueError(f"at most {MAX_INPUTS} inputs per request")
        if not all(isinstance(t, str) for t in texts):
            raise ValueError("input must be a string or a list of strings; token ids are not taken (with LangChain's "
                             "OpenAIEmbeddings, set check_embedding_ctx_length=False)")
        if any(not t for t in texts):
            raise ValueError("input must not hold empty strings")
        return texts

    def unsupported(self) -> str | None:
        """The first field that would change the output but is not served here, or None."""
        return first_unsupported(self.model_extra, {"metadata"}, {"truncate_prompt_tokens": (None,)})


class TokenizeRequest(Body):
    """vLLM's ``/tokenize``: ``prompt`` (text), or ``messages`` rendered by the chat template."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | None = None
    messages: list | None = None
    tools: list | None = None
    add_generation_prompt: StrictBool = True
    add_special_tokens: StrictBool | None = None
    return_token_strs: StrictBool = False

    @model_validator(mode="after")
    def _one_of(self):
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("send either prompt or messages")
        return self


class DetokenizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    tokens: list[int]

    @field_validator("tokens", mode="before")
    @classmethod
    def _ids(cls, value):
        if not isinstance(value, list) or any(isinstance(t, bool) or not isinstance(t, int) or t < 0 for t in value):
            raise ValueError("tokens must be a list of non-negative integers")
        return value
