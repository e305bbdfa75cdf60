"""``POST /v1/chat/completions`` request bodies: messages (text and image parts, earlier tool calls), sampling,
logprobs, ``response_format`` and ``tools`` (OpenAI's Chat Completions reference)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator, model_validator

from tenfold.serve.protocol.common import Sampling, check_tool_choice, function_tool, json_number, read_tools, utf8

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
            return utf8(value, "content")
        for part in value:
            kind = part.get("type")
            if kind == "text":
                if not isinstance(part.get("text"), str):
                    raise ValueError("a text part needs a string 'text'")
                utf8(part["text"], "a text part")
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


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: StrictBool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)

    @field_validator("max_completion_tokens", "top_logprobs", mode="before")
    @classmethod
    def _chat_numbers_are_numbers(cls, value):
        return json_number(value)

    response_format: dict | None = None
    tools: list[dict] | None = None
    tool_choice: str | dict | None = None
    parallel_tool_calls: StrictBool = True

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

    @field_validator("tools", mode="before")
    @classmethod
    def _tools(cls, value):
        """Function tools only, each name 1-64 of ``a-zA-Z0-9_-`` (OpenAI's rule), no name twice."""
        return read_tools(value, _chat_tool)

    @model_validator(mode="after")
    def _choice(self):
        names = [t["function"]["name"] for t in self.tools or []]
        choice = self.tool_choice
        if choice is None:
            self.tool_choice = "auto" if self.tools else "none"
            return self
        if isinstance(choice, dict):
            if choice.get("type") != "function" or not isinstance(choice.get("function"), dict):
                raise ValueError("a tool_choice object must be {'type': 'function', 'function': {'name': ...}}")
            choice = choice["function"]
        self.tool_choice = check_tool_choice(choice, names)
        return self


def _chat_tool(tool, where: str) -> list[dict]:
    """One Chat Completions tool ``{"type": "function", "function": {name, description, parameters}}``."""
    fn = tool.get("function") if isinstance(tool, dict) else None
    if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not isinstance(fn, dict):
        raise ValueError("each tool must be {'type': 'function', 'function': {'name': ..., 'parameters': {...}}}")
    return [function_tool(fn.get("name"), fn.get("description"), fn.get("parameters"), where)]
