"""Request bodies of the OpenAI-compatible API (the fields tenfold serves; others are accepted and ignored)."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict] | None = ""

    @field_validator("content")
    @classmethod
    def _parts(cls, value):
        """Text, or a list of ``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url"}}``."""
        if value is None:
            return ""
        if isinstance(value, list):
            for part in value:
                kind = part.get("type")
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise ValueError("a text part needs a string 'text'")
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
    model_config = ConfigDict(extra="ignore")

    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=8)
    stream: bool = False
    stream_options: dict | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if value is None:
            return []
        stops = [value] if isinstance(value, str) else value
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop must be up to 4 non-empty strings")
        return stops

    @field_validator("temperature", "top_p")
    @classmethod
    def _finite(cls, value):
        if value != value:  # NaN
            raise ValueError("must be a number")
        return value


class ChatRequest(_Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class CompletionRequest(_Sampling):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=1)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value):
        prompts = [value] if isinstance(value, str) else value
        if not prompts or any(not p for p in prompts):
            raise ValueError("prompt must be a non-empty string (or a list of them)")
        if len(prompts) > 8:
            raise ValueError("at most 8 prompts per request")
        return value
