"""Request bodies of the OpenAI-compatible API: every field tenfold serves, validated; output-changing fields it
does not serve are refused.

A request field that would change the answer is either implemented or refused with a 400 whose ``code`` is
``unsupported_parameter`` and whose ``param`` names the field (:meth:`_Sampling.unsupported`). Fields that never
change the output (``metadata``, ``store``, ``service_tier``, ...) are accepted and ignored; so are the neutral
values of fields tenfold does not implement (``presence_penalty: 0``, ``logit_bias: {}``, ``best_of`` equal to ``n``).
"""
from __future__ import annotations

from typing import Any, Literal

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


def _utf8(text: str, where: str) -> str:
    """``text`` unchanged, or ValueError when it holds a lone surrogate (not encodable as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{where} is not valid Unicode text (it holds a lone surrogate)") from None
    return text


# Message keys that carry nothing the model sees (what the openai client echoes back from a response).
_MESSAGE_HARMLESS = {"refusal", "annotations", "audio", "function_call", "reasoning_content"}


class Message(BaseModel):
    """One chat message: ``content`` is text or a list of text / image_url parts.

    Keys the server would have to ignore but that could matter (``name``, ``prefix``, ...) are refused.
    """

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = ""
    tool_calls: list[dict] | None = None  # an assistant's earlier calls (OpenAI shape)
    tool_call_id: str | None = None  # a tool message: the call it answers

    @model_validator(mode="after")
    def _no_unserved_keys(self):
        for key, value in (self.model_extra or {}).items():
            if key not in _MESSAGE_HARMLESS or value not in (None, [], ""):
                raise ValueError(f"the message field {key!r} is not supported by this server")
        return self

    @field_validator("tool_calls")
    @classmethod
    def _calls(cls, value):
        for call in value or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or \
                    not isinstance(fn.get("arguments", "{}"), str):
                raise ValueError("each tool call needs function.name and function.arguments (a JSON string)")
        return value

    @field_validator("content")
    @classmethod
    def _parts(cls, value):
        """Text, or a list of ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url"}}``."""
        if value is None:
            return ""
        if isinstance(value, str):
            return _utf8(value, "content")
        for part in value:
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError("a text part needs a string 'text'")
                _utf8(part["text"], "a text part")
            elif kind == "image_url":
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str):
                    raise ValueError("an image_url part needs image_url.url (a data: URL)")
            else:
                raise ValueError(f"unsupported content part type {kind!r} (text and image_url are supported)")
        return value

    def text_and_images(self, placeholder: str) -> tuple[str, list[str]]:
        """The text with ``placeholder`` where each image part was, and the image URLs in order."""
        if isinstance(self.content, str):
            return self.content, []
        text, urls = [], []
        for part in self.content:
            if part["type"] == "text":
                text.append(part["text"])
            else:
                url = part["image_url"]
                urls.append(url["url"] if isinstance(url, dict) else url)
                text.append(placeholder)
        return "".join(text), urls


class _Sampling(BaseModel):
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
                _utf8(item, where or "the body")
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
        return [_utf8(s, "stop") for s in stops]

    @field_validator("user")
    @classmethod
    def _user(cls, value):
        return None if value is None else _utf8(value, "user")

    @field_validator("max_tokens", "temperature", "top_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "top_k", "min_p", "seed", "n", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value):
        return _json_number(value)

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
            if name in _NEUTRAL and _is_neutral(value, _NEUTRAL[name]):
                continue
            if name == "best_of" and value in (None, self.n):
                continue
            return name
        return None


def _json_number(value: Any) -> Any:
    """Refuse JSON true/false and strings where a number is meant (pydantic's lax mode reads ``true`` as 1 and
    ``"0.5"`` as 0.5; OpenAI answers 400)."""
    if isinstance(value, bool):
        raise ValueError(f"must be a number, not {str(value).lower()}")
    if isinstance(value, str):
        raise ValueError("must be a number, not a string")
    return value


def _is_neutral(value: Any, neutral: tuple) -> bool:
    return any(value is v or (type(value) is type(v) and value == v) or
               (isinstance(value, (int, float)) and not isinstance(value, bool) and isinstance(v, (int, float))
                and value == v) for v in neutral)


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("max_completion_tokens", "top_logprobs", mode="before")
    @classmethod
    def _chat_numbers_are_numbers(cls, value):
        return _json_number(value)

    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: bool = True

    @model_validator(mode="after")
    def _top_needs_logprobs(self):
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        if self.max_tokens is not None and self.max_completion_tokens is not None and \
                self.max_tokens != self.max_completion_tokens:
            raise ValueError("max_tokens and max_completion_tokens disagree; send one of them")
        return self

    @field_validator("response_format")
    @classmethod
    def _format(cls, value):
        if value is None:
            return None
        kind = value.get("type")
        if kind not in ("text", "json_object", "json_schema"):
            raise ValueError("response_format.type must be 'text', 'json_object' or 'json_schema'")
        if kind == "json_schema":
            spec = value.get("json_schema")
            if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
                raise ValueError("response_format.json_schema needs a 'schema' object")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value):
        names = set()
        for tool in value or []:
            fn = tool.get("function") if isinstance(tool, dict) else None
            if tool.get("type", "function") != "function" or not isinstance(fn, dict) or not fn.get("name"):
                raise ValueError("each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}")
            if not isinstance(fn.get("parameters", {}), dict):
                raise ValueError(f"tool {fn['name']!r}: parameters must be a JSON schema object")
            if fn["name"] in names:
                raise ValueError(f"tool {fn['name']!r} is defined twice")
            names.add(fn["name"])
        return value

    @model_validator(mode="after")
    def _choice(self):
        choice = self.tool_choice
        if choice is None:
            self.tool_choice = "auto" if self.tools else "none"
            return self
        if isinstance(choice, str):
            if choice not in ("none", "auto", "required"):
                raise ValueError("tool_choice must be 'none', 'auto', 'required' or {'type': 'function', ...}")
        else:
            if choice.get("type") != "function" or not isinstance(choice.get("function"), dict):
                raise ValueError("a tool_choice object must be {'type': 'function', 'function': {'name': ...}}")
            name = choice["function"].get("name")
            if not name or name not in {t["function"]["name"] for t in self.tools or []}:
                raise ValueError(f"tool_choice names a function that is not in tools: {name!r}")
        if choice != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        return self


class CompletionRequest(_Sampling):
    """``prompt``: a string, a list of strings, a list of token ids, or a list of token-id lists (at most 8)."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(default=None, ge=0, le=20)
    echo: bool = False

    @field_validator("logprobs", mode="before")
    @classmethod
    def _logprobs_is_a_number(cls, value):
        return _json_number(value)

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
                _utf8(p, "prompt")
            elif any(isinstance(t, bool) or t < 0 for t in p):
                raise ValueError("token ids must be non-negative integers")
        return value

    def prompts(self) -> list[str | list[int]]:
        """The prompts, one per entry: text or token ids (after validation ``prompt`` is always a list)."""
        return list(self.prompt)
