"""What every request body of the OpenAI-compatible API shares: sampling fields, strict numbers, valid Unicode, and
the refusal of output-changing fields the server does not serve.

A request field that would change the answer is either implemented or refused with a 400 whose ``code`` is
``unsupported_parameter`` and whose ``param`` names the field (:meth:`Sampling.unsupported`). Fields that never
change the output (``metadata``, ``store``, ``service_tier``, ...) are accepted and ignored; so are the neutral
values of fields tenfold does not implement (``presence_penalty: 0``, ``logit_bias: {}``, ``best_of`` equal to ``n``).
"""
from __future__ import annotations

import re
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

# torch.Generator.manual_seed takes any integer in [-2**63, 2**64 - 1]; OpenAI documents an integer seed.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1

# Fields that do not change what is generated: accepted and ignored.
_HARMLESS = {"metadata", "store", "service_tier", "safety_identifier", "stream_options"}
# Fields accepted when they carry their neutral value (the value that leaves the output unchanged).
_NEUTRAL = {"logit_bias": (None, {}), "modalities": (None, ["text"]),
            "reasoning_effort": (None,), "suffix": (None, ""), "prediction": (None,), "functions": (None,),
            "function_call": (None, "none", "auto"), "audio": (None,), "web_search_options": (None,),
            "verbosity": (None,), "user_id": (None,)}


# OpenAI's rule for function names (Chat Completions, Responses); Anthropic's is the same.
TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def function_tool(name: Any, description: Any, parameters: Any, where: str) -> dict:
    """One function tool in Chat Completions' shape ``{"type": "function", "function": {name, description,
    parameters}}``, from any API's fields; ValueError naming ``where`` for a name that is not 1-64 of
    ``a-zA-Z0-9_-``, a description that is not text, or parameters that are not a JSON schema object."""
    if not isinstance(name, str) or not TOOL_NAME.fullmatch(name):
        raise ValueError(f"{where}: a function name must be 1-64 characters of a-z, A-Z, 0-9, _ and -, "
                         f"got {json_repr(name)}")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{where}: description must be a string")
    if parameters is None:
        parameters = {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise ValueError(f"{where}: parameters must be a JSON schema object")
    fn = {"name": name, "parameters": parameters}
    if description:
        fn["description"] = description
    return {"type": "function", "function": fn}


def json_repr(value: Any, limit: int = 80) -> str:
    """A short printable form of a client's value for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_tool_choice(choice: Any, names: list[str], where: str = "tool_choice") -> str | dict:
    """``none`` / ``auto`` / ``required``, or ``{"type": "function", "function": {"name": ...}}`` naming one of
    ``names`` (Chat Completions' shape); ValueError otherwise."""
    if isinstance(choice, str):
        if choice not in ("none", "auto", "required"):
            raise ValueError(f"{where} must be 'none', 'auto', 'required' or name a function")
    elif isinstance(choice, dict):
        name = choice.get("name") if isinstance(choice, dict) else None
        if not isinstance(name, str) or name not in names:
            raise ValueError(f"{where} names a function that is not in tools: {json_repr(name)}")
    else:
        raise ValueError(f"{where} must be a string or an object")
    if choice != "none" and not names:
        raise ValueError(f"{where} needs tools")
    return choice if isinstance(choice, str) else {"type": "function", "function": {"name": choice["name"]}}


def unique_tools(tools: list[dict]) -> list[dict]:
    """``tools`` unchanged; ValueError when two share a name."""
    seen = set()
    for tool in tools:
        name = tool["function"]["name"]
        if name in seen:
            raise ValueError(f"tool {name!r} is defined twice")
        seen.add(name)
    return tools


def utf8(text: str, where: str) -> str:
    """``text`` unchanged, or ValueError when it holds a lone surrogate (not encodable as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} is not valid Unicode text (it holds a lone surrogate)") from None
    return text


def unicode_everywhere(data: Any) -> Any:
    """``data`` unchanged; ValueError for a lone surrogate in any string of the body (keys included): it is not
    text."""
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


def first_unsupported(extras: dict | None, harmless: set[str], neutral: dict[str, tuple]) -> str | None:
    """The first of a body's extra fields (``model_extra``) that would change the output: not in ``harmless`` (fields
    that never change it) and not carrying its neutral value (``neutral``: field -> the values that leave the output
    unchanged). None when every extra field is harmless."""
    for name, value in (extras or {}).items():
        if name in harmless or (name in neutral and is_neutral(value, neutral[name])):
            continue
        return name
    return None


def read_tools(value: Any, read_one: Callable[[Any, str], list[dict]]) -> list[dict] | None:
    """A body's ``tools`` in Chat Completions' shape: ``read_one(tool, "tools.N")`` turns one client tool (of any
    API's shape) into one or more function tools or raises ValueError; a list is required and no name may repeat."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise ValueError("tools must be a list")
    tools = []
    for i, tool in enumerate(value):
        tools += read_one(tool, f"tools.{i}")
    return unique_tools(tools)


class Body(BaseModel):
    """A request body: extra fields kept (each endpoint refuses the ones that would change the output) and no lone
    surrogate in any string (it is not text)."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="before")
    @classmethod
    def _unicode_everywhere(cls, data):
        return unicode_everywhere(data)


class Sampling(Body):
    """The fields Chat Completions and Completions share: model, sampling, stop, seed, n, stream, user."""

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
    min_tokens: int | None = Field(default=None, ge=0)  # vLLM's: no end-of-sequence before this many tokens
    stop: str | list[str] | None = None
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)
    n: int = Field(default=1, ge=1, le=8)
    stream: StrictBool = False
    stream_options: dict | None = None
    user: str | None = Field(default=None, max_length=256)
    # names the sink-cache session (in the API key's namespace), before ``user``; an X-Session-Id header wins
    prompt_cache_key: str | None = Field(default=None, max_length=256)

    def session_key(self) -> str | None:
        """The client's name for this conversation's session: ``prompt_cache_key``, else ``user``."""
        return self.prompt_cache_key or self.user

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

    @field_validator("user", "prompt_cache_key")
    @classmethod
    def _user(cls, value):
        return None if value is None else utf8(value, "user")

    @field_validator("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "top_k", "min_p", "min_tokens", "seed", "n", mode="before")
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
        return first_unsupported(self.model_extra, _HARMLESS, {**_NEUTRAL, "best_of": (None, self.n)})


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
