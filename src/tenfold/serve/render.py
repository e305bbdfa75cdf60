"""Response objects of the OpenAI-compatible API: chat completions and text completions, whole or as SSE chunks.

Shapes follow OpenAI's API reference (``chat.completion``, ``chat.completion.chunk``, ``text_completion``);
``created`` is the response's own time (Unix seconds), and ``usage.prompt_tokens_details.cached_tokens`` counts the
prompt tokens a session's cache had already consumed. Log-probabilities are shaped by :mod:`tenfold.serve.logprobs`.
"""
from __future__ import annotations

import time

from tenfold.serve.logprobs import TokenText, chat_content, completion_logprobs
from tenfold.serve.structured import parse_calls


def usage(prompt: int, completion: int, cached: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": cached}}


class ChatRender:
    """Builds ``chat.completion`` objects and ``chat.completion.chunk`` events for one response.

    ``texts``: a :class:`TokenText` when the request asked for logprobs, else None.
    """

    prefix, object, chunk_object = "chatcmpl", "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str, include_usage: bool, texts: TokenText | None = None, tools: bool = False):
        self.model, self.include_usage, self.texts, self.tools = model, include_usage, texts, tools
        self.created = int(time.time())
        self._held: dict[int, list] = {}  # with tools: each choice's text and logprobs, sent whole at its end

    def _base(self, rid: str, obj: str) -> dict:
        return {"id": rid, "object": obj, "created": self.created, "model": self.model}

    def _logprobs(self, entries) -> dict | None:
        return None if self.texts is None else {"content": chat_content(entries, self.texts), "refusal": None}

    def _message(self, text: str, reason: str) -> tuple[dict, str]:
        """The message fields for ``text`` (tool calls parsed out when the request had tools) and finish_reason."""
        if not self.tools:
            return {"content": text}, reason
        content, calls = parse_calls(text, truncated=reason == "length")
        if not calls:
            return {"content": content or ""}, reason
        # a reply cut by max_tokens says so, even when it holds complete calls before the cut
        return {"content": content, "tool_calls": calls}, ("length" if reason == "length" else "tool_calls")

    def chunk(self, rid: str, i: int, delta: str | None, reason: str | None, entries=(), start: bool = False):
        if self.tools and not start:  # a call is only known once its text is complete: send each choice at its end
            held = self._held.setdefault(i, ["", []])
            held[0] += delta or ""
            held[1] += list(entries)
            if reason is None:
                return None
            fields, reason = self._message(held[0], reason)
            if "tool_calls" in fields:
                fields["tool_calls"] = [{"index": k, **c} for k, c in enumerate(fields["tool_calls"])]
            delta, entries, d = None, held[1], fields
        else:
            d = {"role": "assistant", "content": ""} if start else ({"content": delta} if delta else {})
        return {**self._base(rid, self.chunk_object),
                "choices": [{"index": i, "delta": d, "logprobs": None if start else self._logprobs(entries),
                             "finish_reason": reason}]}

    def usage_chunk(self, rid: str, usage_: dict) -> dict:
        return {**self._base(rid, self.chunk_object), "choices": [], "usage": usage_}

    def full(self, rid: str, texts: list[str], reasons: list[str], usage_: dict, entries: list[list]) -> dict:
        return {**self._base(rid, self.object), "usage": usage_,
                "choices": [{"index": i, "message": {"role": "assistant", **fields}, "logprobs": self._logprobs(e),
                             "finish_reason": reason}
                            for i, (t, r, e) in enumerate(zip(texts, reasons, entries))
                            for fields, reason in [self._message(t, r)]]}


class TextRender(ChatRender):
    """Builds ``text_completion`` objects and their stream events.

    ``echo``: per choice, the prompt text (prepended to the completion) and the prompt's scored tokens.
    """

    prefix, object, chunk_object = "cmpl", "text_completion", "text_completion"

    def __init__(self, model: str, include_usage: bool, texts: TokenText | None = None):
        super().__init__(model, include_usage, texts)
        self.echo: list[tuple[str, list]] | None = None

    def chunk(self, rid, i, delta, reason, entries=(), start=False):
        if start:
            return None
        lp = None if self.texts is None else completion_logprobs(list(entries), self.texts)
        return {**self._base(rid, self.chunk_object),
                "choices": [{"index": i, "text": delta, "logprobs": lp, "finish_reason": reason}]}

    def full(self, rid, texts, reasons, usage_, entries):
        choices = []
        for i, (t, r, e) in enumerate(zip(texts, reasons, entries)):
            prompt, prompt_entries = self.echo[i] if self.echo is not None else ("", [])
            lp = None if self.texts is None else completion_logprobs(prompt_entries + list(e), self.texts)
            choices.append({"index": i, "text": prompt + t, "logprobs": lp, "finish_reason": r})
        return {**self._base(rid, self.object), "usage": usage_, "choices": choices}
