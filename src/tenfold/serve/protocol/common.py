"""What every request body of the OpenAI-compatible API shares: sampling fields, strict numbers, valid Unicode, and
the refusal of output-changing fields the server does not serve.

A request field that would change the answer is either implemented or refused with a 400 whose ``code`` is
``unsupported_parameter`` and whose ``param`` names the field (:meth:`Sampling.unsupported`). Fields that never
change the output (``metadata``, ``store``, ``service_tier``, ...) are accepted and ignored; so are the neutral
values of fields tenfold does not implement (``presence_penalty: 0``, ``logit_bias: {}``, ``best_of`` equal to ``n``).
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# torch.Generator.manual_seed takes any integer in [-2**63, 2**64 - 1]; OpenAI documents an integer seed.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1

# Fields that do not change what is generated: accepted and ignored.
_HARMLESS = {"metadata", "store", "service_tier", "prompt_cache_key", "safety_identifier", "stream_options"}
# Fields accepted when they carry their neutral value (the value that leaves the output unchanged).
_NEUTRAL = {"logit_bias": (None, {}), "modalities": (None, ["text"]),
            "reasoning_effort": (None,), "suffix": (None, ""), "prediction": (None,), "functions": (None,),
            "function_call": (None, "none", "auto"), "audio": (None,), "web_search_options": (None,),
            "verbosity": (None,), "user_id": (None,)}


def utf8(text: str, where: str) -> str:
    """``text`` unchanged, or ValueError when it holds a lone surrogate (not encodable as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} is not valid Unicode text (it holds a lone surrogate)") from None
    return text


class Sampling(BaseModel):
    """The fields Chat Completions and Completions share: model, sampling, stop, seed, n, stream, user."""

    model_config = ConfigDict(extra="allow")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    # OpenAI's penalties (over the answer's tokens) and vLLM's extra sampling parameters (transformers' processors)
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    repetition_penalty: float | None = Field(default=None, ge=0.1, le=10.0)  # sampling.MAX_REPETITION_PENALTY
    top_k: int | None = Field(default=None, ge=-1, le=1_000_000)  # -1 or 0: off
    min_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = Field(default=None, max_length=256)

    @model_validator(mode="before")
    @classmethod
    def _unicode_everywhere(cls, data):
        """Refuse lone surrogates in any string of the body (keys included): they are not text."""
        stack = [("", data)]
        while stack:
            where, item = stack.pop()
            if isinstance(item, str):
                utf8(item, where or "the body")
            elif isinstance(item, dict):
                for key, value in item.items():
                    path = f"{where}.{key}" if where else str(key)
                    stack += [(f"a key in {where or 'the body'}", key), (path, value)]
            elif isinstance(item, list):
                stack += [(f"{where}.{i}", v) for i, v in enumerate(item)]
        return data

    @field_validator("stream_options")
    @classmethod
    def _stream_options(cls, value):
        if value is None:
            return None
        unknown = set(value) - {"include_usage", "continuous_usage_stats"}
        if unknown:
            raise ValueError(f"unsupported stream_options: {sorted(unknown)}")
        if not isinstance(value.get("include_usage", False), bool):
            raise ValueError("stream_options.include_usage must be true or false")
        return value

    @model_validator(mode="after")
    def _options_need_stream(self):
        if self.stream_options and not self.stream:
            raise ValueError("stream_options is only allowed with stream: true")
        return self

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be up to 4 non-empty strings")
        return [utf8(s, "stop") for s in stops]

    @field_validator("user")
    @classmethod
    def _user(cls, value):
        return None if value is None else utf8(value, "user")

    @field_validator("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "top_k", "min_p", "seed", "n", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value):
        return json_number(value)

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, value):
        if value != value:  # NaN
            raise ValueError("must be a number")
        return value

    def unsupported(self) -> str | None:
        """The first request field that would change the output but is not served here, or None."""
        for name, value in (self.model_extra or {}).items():
            if name in _HARMLESS:
                continue
            if name in _NEUTRAL and is_neutral(value, _NEUTRAL[name]):
                continue
            if name == "best_of" and value in (None, self.n):
                continue
            return name
        return None


def json_number(value: Any) -> Any:
    """Refuse JSON true/false and strings where a number is meant (pydantic's lax mode reads ``true`` as 1 and
    ``"0.5"`` as 0.5; OpenAI answers 400)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    if isinstance(value, str):
        raise ValueError("must be a number, not a string")
    return value


def is_neutral(value: Any, neutral: tuple) -> bool:
    return any(value is v or (type(value) is type(v) and value == v) or
               (isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(v, (int, float))
                and value == v) for v in neutral)
