"""Anthropic Messages API responses: the ``message`` object and its stream events (``message_start``,
``content_block_start`` / ``_delta`` / ``_stop``, ``message_delta``, ``message_stop``), and Anthropic-shaped errors
``{"type": "error", "error": {"type", "message"}}``.

Usage follows Anthropic's split: ``input_tokens`` are the prompt tokens fed now, ``cache_read_input_tokens`` those
the sink-cache session had already read.
"""
from __future__ import annotations

import json
import uuid

from tenfold.serve.structured import parse_calls

_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 408: "timeout_error", 413: "request_too_large", 429: "rate_limit_error",
                499: "cancelled", 503: "overloaded_error"}


def anthropic_error(status: int, message: str) -> dict:
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"), "message": message}}


def anthropic_usage(prompt: int, output: int, cached: int) -> dict:
    return {"input_tokens": prompt - cached, "output_tokens": output, "cache_read_input_tokens": cached,
            "cache_creation_input_tokens": 0}


class MessageRender:
    """One Messages response; ``tools``: whether the output may hold ``tool_use`` blocks."""

    def __init__(self, model: str, tools: bool, stops: list[str]):
        self.id, self.model, self.tools, self.stops = f"msg_{uuid.uuid4().hex[:24]}", model, tools, stops
        self.text = ""
        self.open_text = False

    def _message(self, content: list[dict], stop_reason: str | None, stop_sequence: str | None, usage: dict) -> dict:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": stop_sequence, "usage": usage}

    def content(self, text: str, finish: str, stop_sequence: str | None) -> tuple[list[dict], str]:
        """Content blocks and ``stop_reason`` for the finished text."""
        blocks, calls = [], []
        if self.tools:
            text, calls = parse_calls(text, truncated=finish == "length")
            text = text or ""
        if text:
            blocks.append({"type": "text", "text": text})
        blocks += [{"type": "tool_use", "id": "toolu_" + c["id"].removeprefix("call_"), "name": c["function"]["name"],
                    "input": json.loads(c["function"]["arguments"])} for c in calls]
        if finish == "length":
            reason = "max_tokens"
        elif stop_sequence is not None:
            reason = "stop_sequence"
        else:
            reason = "tool_use" if calls else "end_turn"
        return blocks, reason

    def full(self, text: str, finish: str, stop_sequence: str | None, usage: dict) -> dict:
        blocks, reason = self.content(text, finish, stop_sequence)
        return self._message(blocks, reason, stop_sequence, usage)

    # -- stream ---------------------------------------------------------------------------------
    def start(self, usage: dict) -> list[tuple[str, dict]]:
        return [("message_start", {"type": "message_start",
                                   "message": self._message([], None, None, {**usage, "output_tokens": 0})}),
                ("ping", {"type": "ping"})]

    def delta(self, text: str) -> list[tuple[str, dict]]:
        self.text += text
        if self.tools or not text:
            return []
        events = []
        if not self.open_text:
            self.open_text = True
            events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
        events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                               "delta": {"type": "text_delta", "text": text}}))
        return events

    def finish(self, finish: str, stop_sequence: str | None, usage: dict) -> list[tuple[str, dict]]:
        blocks, reason = self.content(self.text, finish, stop_sequence)
        events = []
        if self.tools:
            for index, block in enumerate(blocks):
                if block["type"] == "text":
                    events += [("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {"type": "text", "text": ""}}),
                               ("content_block_delta", {"type": "content_block_delta", "index": index,
                                                        "delta": {"type": "text_delta", "text": block["text"]}})]
                else:
                    events += [("content_block_start", {"type": "content_block_start", "index": index,
                                                        "content_block": {**block, "input": {}}}),
                               ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": {
                                   "type": "input_json_delta", "partial_json": json.dumps(block["input"])}})]
                events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        elif self.open_text:
            events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
        events += [("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": reason, "stop_sequence": stop_sequence},
                                      "usage": {"output_tokens": usage["output_tokens"]}}),
                   ("message_stop", {"type": "message_stop"})]
        return events

    @staticmethod
    def failed(status: int, message: str) -> list[tuple[str, dict]]:
        return [("error", anthropic_error(status, message))]
