"""``POST /v1/completions`` request bodies: text or token-id prompts, ``echo`` and ``logprobs`` (OpenAI's legacy
Completions reference)."""
from __future__ import annotations

from pydantic import Field, StrictBool, field_validator

from tenfold.serve.protocol.common import Sampling, json_number, utf8


class CompletionRequest(Sampling):
    """``prompt``: a string, a list of strings, a list of token ids, or a list of token-id lists (at most 8)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: StrictBool = False

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs_is_a_number(cls, value):
        return json_number(value)

    @field_validator("prompt", mode="before")
    @classmethod
    def _token_ids_are_integers(cls, value):
        """pydantic reads ``true`` as token 1 and ``"5"`` or ``5.0`` as token 5 before ``_prompt`` sees them."""
        rows = value if isinstance(value, list) and value and isinstance(value[0], list) else [value]
        for row in rows:
            if isinstance(row, list) and any(not isinstance(t, str) for t in row) and \
                    any(isinstance(t, bool) or not isinstance(t, int) for t in row):
                raise ValueError("token ids must be non-negative integers")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        if isinstance(value, str):
            value = [value]
        elif value and isinstance(value[0], int):
            value = [value]
        if not value or any(len(p) == 0 for p in value):
            raise ValueError("prompt must be non-empty (a string, a list of strings, or token ids)")
        if len(value) > 8:
            raise ValueError("at most 8 prompts per request")
        for p in value:
            if isinstance(p, str):
                utf8(p, "prompt")
            elif any(isinstance(t, bool) or t < 0 for t in p):
                raise ValueError("token ids must be non-negative integers")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry: text or token ids (after validation ``prompt`` is always a list)."""
        return list(self.prompt)
