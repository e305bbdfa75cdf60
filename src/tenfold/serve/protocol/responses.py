"""``POST /v1/responses`` request bodies (OpenAI's Responses API), turned into the plain chat messages every
chat-shaped API of the server renders (:mod:`tenfold.serve.chat_prompt`).

Served: ``input`` (a string or a list of items: ``message`` with ``input_text`` / ``output_text`` parts,
``function_call`` and ``function_call_output``), ``instructions``, ``previous_response_id``, ``store``,
``max_output_tokens``, ``temperature``, ``top_p``, function ``tools`` with ``tool_choice`` and
``parallel_tool_calls``, ``text.format`` (``text``, ``json_object``, ``json_schema``), ``truncation``, ``stream``,
and ``prompt_cache_key`` / ``user`` (the sink-cache session). Fields that never change the output (``metadata``,
``service_tier``, ``safety_identifier``, ``prompt_cache_retention``, ``stream_options``) are accepted; the neutral
value of a field that is not served is accepted; anything else that would change the answer is refused by name
(:meth:`ResponsesRequest.unsupported`).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, StrictBool, field_validator, model_validator

from tenfold.serve.protocol.common import (TOOL_NAME, Body, check_tool_choice, first_unsupported, function_tool,
                                           json_number, json_repr, read_tools, utf8)
from tenfold.serve.structured import call_text

_HARMLESS = {"service_tier", "safety_identifier", "prompt_cache_retention", "stream_options",
             "client_metadata", "session_id"}
_NEUTRAL = {"background": (None, False), "top_logprobs": (None, 0),
            "max_tool_calls": (None,), "conversation": (None,), "prompt": (None,), "context_management": (None,),
            "user_id": (None,)}
_ROLES = {"user": "user", "system": "system", "developer": "system", "assistant": "assistant"}


def qualified(namespace: str | None, name: str) -> str:
    """The name the model sees and writes for function ``name`` of ``namespace`` (``namespace.name``)."""
    return f"{namespace}.{name}" if namespace else name


def split_qualified(name: str) -> tuple[str | None, str]:
    """(namespace or None, function name) of a name the model wrote."""
    namespace, dot, rest = name.partition(".")
    return (namespace, rest) if dot else (None, name)


def _text_parts(content: Any, where: str, assistant: bool) -> str:
    """A message's ``content`` (a string or a list of text parts) as one string; ValueError for parts that are not
    text (images, files and audio are not served on this endpoint)."""
    if isinstance(content, str):
        return utf8(content, where)
    if not isinstance(content, list):
        raise ValueError(f"{where} must be a string or a list of content parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        allowed = ("output_text", "refusal", "input_text") if assistant else ("input_text",)
        if kind not in allowed:
            raise ValueError(f"{where}.{j}: content part type {json_repr(kind)} is not supported here "
                             f"({' and '.join(allowed)} are)")
        text = part.get("refusal" if kind == "refusal" else "text")
        if not isinstance(text, str):
            raise ValueError(f"{where}.{j}: a {kind} part needs a string")
        texts.append(utf8(text, f"{where}.{j}"))
    return "".join(texts)


def input_messages(items: str | list, where: str = "input") -> list[dict]:
    """Responses ``input`` as plain chat messages ``{"role", "content"}``; consecutive ``function_call`` items
    join the assistant message before them (one turn that called several functions), each written as the text the
    model writes for a call; ``function_call_output`` becomes a ``tool`` message. ValueError naming the item."""
    if isinstance(items, str):
        return [{"role": "user", "content": utf8(items, where)}]
    messages: list[dict] = []
    for i, item in enumerate(items):
        at = f"{where}.{i}"
        if not isinstance(item, dict):
            raise ValueError(f"{at}: an input item must be an object")
        kind = item.get("type", "message")
        if kind == "message":
            role = _ROLES.get(item.get("role")) if isinstance(item.get("role"), str) else None
            if role is None:
                raise ValueError(f"{at}.role must be user, system, developer or assistant")
            text = _text_parts(item.get("content"), f"{at}.content", role == "assistant")
            messages.append({"role": role, "content": text})
        elif kind == "function_call":
            name, arguments = item.get("name"), item.get("arguments")
            if not isinstance(name, str) or not isinstance(arguments, str) or not isinstance(item.get("call_id"), str):
                raise ValueError(f"{at}: a function_call needs string call_id, name and arguments")
            if item.get("namespace") is not None and not isinstance(item["namespace"], str):
                raise ValueError(f"{at}.namespace must be a string")
            name = qualified(item.get("namespace"), name)
            call = call_text([{"function": {"name": name, "arguments": arguments}}])
            if messages and messages[-1]["role"] == "assistant":
                last = messages[-1]["content"]
                messages[-1] = {"role": "assistant", "content": (last + "\n" if last else "") + call}
            else:
                messages.append({"role": "assistant", "content": call})
        elif kind == "function_call_output":
            output = item.get("output")
            if not isinstance(item.get("call_id"), str):
                raise ValueError(f"{at}: a function_call_output needs a string call_id")
            text = output if isinstance(output, str) else _text_parts(output, f"{at}.output", False)
            messages.append({"role": "tool", "content": utf8(text, f"{at}.output")})
        else:
            raise ValueError(f"{at}: input item type {json_repr(kind)} is not supported (message, function_call and "
                             "function_call_output are)")
    return messages


class ResponsesRequest(Body):
    """A ``POST /v1/responses`` body (see the module docstring for what is served)."""


    model: str
    input: str | list | None = None
    instructions: str | None = None
    previous_response_id: str | None = Field(default=None, max_length=128)
    store: StrictBool = True
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stream: StrictBool = False
    tools: list | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: StrictBool = True
    text: dict | None = None
    reasoning: dict | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    user: str | None = Field(default=None, max_length=256)
    prompt_cache_key: str | None = Field(default=None, max_length=256)
    metadata: dict[str, str] | None = None

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata(cls, value):
        """OpenAI's rule: at most 16 pairs, keys up to 64 characters, values strings up to 512."""
        if value is None:
            return None
        if not isinstance(value, dict) or len(value) > 16 or \
                any(not isinstance(v, str) or len(k) > 64 or len(v) > 512 for k, v in value.items()):
            raise ValueError("metadata is at most 16 pairs of strings (keys up to 64 characters, values up to 512)")
        return value

    @field_validator("max_output_tokens", "temperature", "top_p", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value):
        return json_number(value)

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, value):
        if value is not None and value != value:  # NaN
            raise ValueError("must be a number")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value):
        """Function tools (Responses' flat shape ``{"type": "function", "name", "description", "parameters"}``)
        and namespaces of them, in Chat Completions' nested shape, which the grammar and the chat template take."""
        return read_tools(value, _responses_tool)

    @field_validator("reasoning")
    @classmethod
    def _reasoning(cls, value):
        """This server's models do not reason: no effort but ``none`` can be served; a summary of no reasoning is
        empty, so any ``summary`` setting is accepted (Codex sends ``summary: auto``)."""
        if value is not None and value.get("effort") not in (None, "none"):
            raise ValueError("reasoning.effort is not supported by this server (its models do not reason; send "
                             "'none' or leave it out)")
        return value

    @field_validator("include")
    @classmethod
    def _include(cls, value):
        """Only ``reasoning.encrypted_content`` (vacuous: no reasoning items are produced) is accepted."""
        extra = [v for v in value or [] if v != "reasoning.encrypted_content"]
        if extra:
            raise ValueError(f"include {extra} is not supported by this server")
        return value

    @field_validator("text")
    @classmethod
    def _text_config(cls, value):
        if value is None:
            return None
        unknown = set(value) - {"format", "verbosity"}
        if unknown:
            raise ValueError(f"unsupported text options: {sorted(unknown)}")
        if value.get("verbosity") not in (None, "medium"):
            raise ValueError("text.verbosity other than 'medium' is not supported by this server (it would change "
                             "the output)")
        fmt = value.get("format") or {"type": "text"}
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
            raise ValueError("text.format.type must be 'text', 'json_object' or 'json_schema'")
        if fmt["type"] == "json_schema" and not isinstance(fmt.get("schema"), dict):
            raise ValueError("text.format json_schema needs a 'schema' object")
        return {**value, "format": fmt}

    @model_validator(mode="after")
    def _checks(self):
        if self.input is None and self.previous_response_id is None:
            raise ValueError("input is required (or previous_response_id)")
        if isinstance(self.input, list) and not self.input and self.previous_response_id is None:
            raise ValueError("input is empty")
        names = [t["function"]["name"] for t in self.tools or []]
        choice = self.tool_choice
        if choice is None:
            self.tool_choice = "auto" if self.tools else "none"
        else:
            if isinstance(choice, dict) and choice.get("type") != "function":
                raise ValueError("a tool_choice object must be {'type': 'function', 'name': ...}")
            self.tool_choice = check_tool_choice(choice, names)
        return self

    def messages(self) -> list[dict]:
        """This request's own input as plain chat messages (ValueError naming a bad item)."""
        return [] if self.input is None else input_messages(self.input)

    def format(self) -> dict | None:
        """``text.format`` in Chat Completions' ``response_format`` shape (None for plain text)."""
        fmt = (self.text or {}).get("format") or {"type": "text"}
        if fmt["type"] == "json_schema":
            return {"type": "json_schema", "json_schema": {"name": fmt.get("name"), "schema": fmt["schema"]}}
        return None if fmt["type"] == "text" else {"type": fmt["type"]}

    def session_key(self) -> str | None:
        return self.prompt_cache_key or self.user

    def unsupported(self) -> str | None:
        """The first field that would change the output but is not served here, or None."""
        return first_unsupported(self.model_extra, _HARMLESS, _NEUTRAL)


class InputTokensRequest(ResponsesRequest):
    """``POST /v1/responses/input_tokens``: the same input fields; nothing is generated."""

    model: str | None = None  # type: ignore[assignment]


def _responses_tool(tool, where: str) -> list[dict]:
    """One Responses tool: a flat function tool, or a namespace (a group of function tools; a call names the
    namespace beside the function, as Codex sends them)."""
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "namespace":
        inner = tool.get("tools")
        if not isinstance(inner, list) or not isinstance(tool.get("name"), str) or not TOOL_NAME.fullmatch(tool["name"]):
            raise ValueError(f"{where}: a namespace needs a name (1-64 of a-zA-Z0-9_-) and a list of tools")
        tools = []
        for j, fn in enumerate(inner):
            if not isinstance(fn, dict) or fn.get("type") != "function":
                raise ValueError(f"{where}.tools.{j}: only function tools go in a namespace")
            one = function_tool(fn.get("name"), fn.get("description"), fn.get("parameters"), f"{where}.tools.{j}")
            one["function"]["name"] = qualified(tool["name"], one["function"]["name"])
            tools.append(one)
        return tools
    if kind != "function":
        raise ValueError(f"{where}: tool type {json_repr(kind)} is not supported (function tools and namespaces of "
                         "them are)")
    return [function_tool(tool.get("name"), tool.get("description"), tool.get("parameters"), where)]
