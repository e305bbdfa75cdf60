"""``POST /v1/messages`` request bodies (Anthropic's Messages API, as llama.cpp server and vLLM serve it), turned
into the plain chat messages every chat-shaped API of the server renders.

Served: ``system`` (a string or text blocks), ``messages`` with ``text``, ``tool_use`` and ``tool_result``
blocks, ``max_tokens``, ``stop_sequences``, ``temperature``, ``top_p``, ``top_k``, ``tools`` (custom tools with an
``input_schema``) and ``tool_choice`` (``auto``, ``any``, ``tool``, ``none``; ``disable_parallel_tool_use``),
``output_config.format`` (a JSON schema, through llguidance), ``stream`` and ``metadata.user_id`` (the sink-cache
session). ``cache_control`` marks are accepted (the sink-cache session already reuses what it has read). Fields that
would change the answer but are not served (``thinking``, ``output_config.effort``, images, documents, server
tools...) are refused by name.
"""
from __future__ import annotations

import json
from typing import Any

from pydantic import Field, PrivateAttr, StrictBool, field_validator, model_validator

from tenfold.serve.protocol.common import (Body, check_tool_choice, first_unsupported, function_tool, json_number,
                                           json_repr, read_tools, utf8)
from tenfold.serve.structured import call_text

_HARMLESS = {"service_tier", "cache_control", "inference_geo", "speed"}
_NEUTRAL = {"thinking": (None, {"type": "disabled"}), "container": (None,), "mcp_servers": (None, []),
            "context_management": (None,)}


def _text(block: dict, where: str) -> str:
    if not isinstance(block.get("text"), str):
        raise ValueError(f"{where}: a text block needs a string 'text'")
    return utf8(block["text"], where)


def _blocks(content: Any, where: str) -> list[dict]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise ValueError(f"{where} must be a string or a list of content blocks")
    return content


def _tool_result_text(block: dict, where: str) -> str:
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    else:
        parts = []
        for j, part in enumerate(_blocks(content, f"{where}.content")):
            if part.get("type") != "text":
                raise ValueError(f"{where}.content.{j}: only text is supported in a tool_result")
            parts.append(_text(part, f"{where}.content.{j}"))
        text = "".join(parts)
    return ("Error: " + text) if block.get("is_error") is True else text


def anthropic_messages(system: Any, messages: list) -> list[dict]:
    """``system`` and ``messages`` as plain chat messages: ``tool_use`` blocks written as the text the model writes
    for a call (in the assistant turn), each ``tool_result`` a ``tool`` message. ValueError naming the block."""
    plain = []
    if system:
        blocks = _blocks(system, "system")
        texts = []
        for j, b in enumerate(blocks):
            if b.get("type") != "text":
                raise ValueError(f"system.{j}: only text blocks are supported in system")
            texts.append(_text(b, f"system.{j}"))
        plain.append({"role": "system", "content": "\n".join(texts)})
    for i, message in enumerate(messages):
        at = f"messages.{i}"
        role = message.get("role") if isinstance(message, dict) else None
        if role not in ("user", "assistant"):
            raise ValueError(f"{at}.role must be 'user' or 'assistant'")
        texts, calls, results = [], [], []
        for j, block in enumerate(_blocks(message.get("content"), f"{at}.content")):
            kind, where = block.get("type"), f"{at}.content.{j}"
            if kind == "text":
                texts.append(_text(block, where))
            elif kind == "tool_use" and role == "assistant":
                if not isinstance(block.get("name"), str) or not isinstance(block.get("input"), dict):
                    raise ValueError(f"{where}: a tool_use block needs a string name and an object input")
                calls.append({"function": {"name": block["name"], "arguments": json.dumps(block["input"])}})
            elif kind == "tool_result" and role == "user":
                if not isinstance(block.get("tool_use_id"), str):
                    raise ValueError(f"{where}: a tool_result block needs a string tool_use_id")
                results.append(_tool_result_text(block, where))
            else:
                raise ValueError(f"{where}: content block type {json_repr(kind)} is not supported in {'an' if role == 'assistant' else 'a'} "
                                 f"{role} message (text, and tool_use in assistant / tool_result in user messages, are)")
        plain += [{"role": "tool", "content": r} for r in results]
        text = "".join(texts)
        if calls:
            text = (text + "\n" if text else "") + call_text(calls)
        if text or not results:
            plain.append({"role": role, "content": text})
    return plain


class MessagesRequest(Body):
    """A ``POST /v1/messages`` body (see the module docstring for what is served)."""


    model: str
    max_tokens: int = Field(ge=1)
    messages: list = Field(min_length=1)
    system: str | list | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=1.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    top_k: int | None = Field(default=None, ge=0)
    stream: StrictBool = False
    tools: list | None = None
    tool_choice: dict | None = None
    metadata: dict | None = None
    output_config: dict | None = None
    _openai_choice: Any = PrivateAttr(default="none")

    @field_validator("max_tokens", "temperature", "top_p", "top_k", mode="before")
    @classmethod
    def _numbers_are_numbers(cls, value):
        return json_number(value)

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, value):
        if value is not None and (len(value) > 4 or any(not s for s in value)):
            raise ValueError("stop_sequences: up to 4 non-empty strings are served")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value):
        """Custom tools ``{"name", "description", "input_schema"}`` in Chat Completions' shape."""
        return read_tools(value, _anthropic_tool)

    @field_validator("metadata")
    @classmethod
    def _metadata(cls, value):
        if value is not None and not isinstance(value.get("user_id", ""), (str, type(None))):
            raise ValueError("metadata.user_id must be a string")
        if value is not None and len(value.get("user_id") or "") > 256:
            raise ValueError("metadata.user_id is at most 256 characters")
        return value

    @field_validator("output_config")
    @classmethod
    def _output_config(cls, value):
        if value is None:
            return None
        unknown = set(value) - {"format", "effort"}
        if unknown:
            raise ValueError(f"unsupported output_config fields: {sorted(unknown)}")
        if value.get("effort") is not None:
            raise ValueError("output_config.effort is not supported by this server (it would change the output)")
        fmt = value.get("format")
        if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "json_schema" or
                                not isinstance(fmt.get("schema"), dict)):
            raise ValueError("output_config.format must be {'type': 'json_schema', 'schema': {...}}")
        return value

    @model_validator(mode="after")
    def _choice(self):
        names = [t["function"]["name"] for t in self.tools or []]
        choice = self.tool_choice or {"type": "auto"}
        if not isinstance(choice.get("disable_parallel_tool_use", False), bool):
            raise ValueError("tool_choice.disable_parallel_tool_use must be true or false")
        kind = choice.get("type")
        mapped = {"auto": "auto", "any": "required", "none": "none"}.get(kind)
        if kind == "tool":
            mapped = {"name": choice.get("name")}
        elif mapped is None:
            raise ValueError("tool_choice.type must be 'auto', 'any', 'tool' or 'none'")
        if not names and kind == "auto":
            mapped = "none"
        self._openai_choice = check_tool_choice(mapped, names, "tool_choice")
        return self

    def openai_tool_choice(self):
        """``tool_choice`` in Chat Completions' terms (``auto``, ``required``, ``none`` or a named function)."""
        return self._openai_choice

    @property
    def parallel(self) -> bool:
        return not (self.tool_choice or {}).get("disable_parallel_tool_use", False)

    def plain_messages(self) -> list[dict]:
        return anthropic_messages(self.system, self.messages)

    def format(self) -> dict | None:
        fmt = (self.output_config or {}).get("format")
        return None if fmt is None else {"type": "json_schema", "json_schema": {"schema": fmt["schema"]}}

    def session_key(self) -> str | None:
        return (self.metadata or {}).get("user_id") or None

    def unsupported(self) -> str | None:
        """The first field that would change the output but is not served here, or None."""
        return first_unsupported(self.model_extra, _HARMLESS, _NEUTRAL)


class CountTokensRequest(MessagesRequest):
    """``POST /v1/messages/count_tokens``: the same fields; nothing is generated."""

    max_tokens: int | None = None  # type: ignore[assignment]


def _anthropic_tool(tool, where: str) -> list[dict]:
    """One Messages tool: a custom tool with an ``input_schema`` (server tools are not served)."""
    if not isinstance(tool, dict) or tool.get("type", "custom") != "custom" or "input_schema" not in tool:
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise ValueError(f"{where}: tool type {json_repr(kind)} is not supported (custom tools with an input_schema "
                         "are)")
    return [function_tool(tool.get("name"), tool.get("description"), tool.get("input_schema"), where)]
