"""Response objects and stream events of the Responses API (OpenAI's ``response`` object and its semantic
server-sent events: ``response.created``, ``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta`` ..., ``response.completed`` or
``response.incomplete``), built from the engine's text.

With tools, a call is only known once its text is complete, so the output items are sent when the choice ends
(as :class:`~tenfold.serve.render.ChatRender` does for ``tool_calls``); free text streams token by token.
"""
from __future__ import annotations

import time
import uuid

from tenfold.serve.protocol.responses import split_qualified
from tenfold.serve.structured import parse_calls


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def responses_usage(prompt: int, output: int, cached: int) -> dict:
    return {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": cached}, "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": prompt + output}


class ResponseRender:
    """One response: its object at any status, its output items, and its numbered stream events.

    ``req``: the :class:`~tenfold.serve.protocol.responses.ResponsesRequest`; ``tools``: whether the output may
    hold function calls (tools given and ``tool_choice`` not ``none``); ``truncation``: the policy in force.
    """

    def __init__(self, rid: str, req, model: str, tools: bool, truncation: str, temperature: float, top_p: float):
        self.rid, self.req, self.model, self.tools = rid, req, model, tools
        self.truncation, self.temperature, self.top_p = truncation, temperature, top_p
        self.created = int(time.time())
        self.sequence = 0
        self.message_id = _id("msg")
        self.text = ""

    # -- objects --------------------------------------------------------------------------------
    def _tools(self) -> list[dict]:
        return [{"type": "function", "name": t["function"]["name"],
                 "description": t["function"].get("description"), "parameters": t["function"]["parameters"],
                 "strict": False} for t in self.req.tools or []]

    def _tool_choice(self):
        choice = self.req.tool_choice if self.req.tools else "auto"  # OpenAI echoes auto when no tools were sent
        return choice if isinstance(choice, str) else {"type": "function", "name": choice["function"]["name"]}

    def response(self, status: str, output: list[dict], usage: dict | None = None, reason: str | None = None,
                 error: dict | None = None) -> dict:
        """The ``response`` object; ``reason``: why it is incomplete (``max_output_tokens``)."""
        req = self.req
        return {"id": self.rid, "object": "response", "created_at": self.created, "status": status,
                "background": False, "error": error,
                "incomplete_details": {"reason": reason} if status == "incomplete" else None,
                "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": self.model,
                "output": output, "parallel_tool_calls": req.parallel_tool_calls,
                "previous_response_id": req.previous_response_id, "prompt_cache_key": req.prompt_cache_key,
                "reasoning": {"effort": None, "summary": None}, "store": req.store,
                "temperature": self.temperature, "text": {"format": (req.text or {}).get("format") or {"type": "text"}},
                "tool_choice": self._tool_choice(), "tools": self._tools(), "top_p": self.top_p,
                "truncation": self.truncation, "usage": usage, "user": req.user,
                "metadata": req.metadata or {},
                "completed_at": int(time.time()) if status == "completed" else None}

    def _message(self, text: str, status: str) -> dict:
        return {"id": self.message_id, "type": "message", "role": "assistant", "status": status,
                "content": [] if status == "in_progress" else [self._part(text)]}

    @staticmethod
    def _part(text: str) -> dict:
        return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}

    def output(self, text: str, finish: str) -> tuple[list[dict], str, str | None]:
        """The output items for the finished ``text``, the response's status and why it is incomplete."""
        status, reason = ("completed", None) if finish == "stop" else \
            ("incomplete", "max_output_tokens" if finish == "length" else None)
        item_status = "completed" if status == "completed" else "incomplete"
        if not self.tools:
            return [self._message(text, item_status)], status, reason
        content, calls = parse_calls(text, truncated=finish == "length")
        items = [self._message(content, item_status)] if content else []
        for c in calls:
            namespace, name = split_qualified(c["function"]["name"])
            item = {"id": _id("fc"), "type": "function_call", "call_id": c["id"], "name": name,
                    "arguments": c["function"]["arguments"], "status": "completed"}
            items.append({**item, "namespace": namespace} if namespace else item)
        return items, status, reason

    # -- events ---------------------------------------------------------------------------------
    def event(self, kind: str, **fields) -> tuple[str, dict]:
        """One named stream event, numbered in order (``sequence_number`` from 0)."""
        data = {"type": kind, "sequence_number": self.sequence, **fields}
        self.sequence += 1
        return kind, data

    def start(self) -> list[tuple[str, dict]]:
        events = [self.event("response.created", response=self.response("in_progress", [])),
                  self.event("response.in_progress", response=self.response("in_progress", []))]
        if not self.tools:
            events += [self.event("response.output_item.added", output_index=0,
                                  item=self._message("", "in_progress")),
                       self.event("response.content_part.added", item_id=self.message_id, output_index=0,
                                  content_index=0, part=self._part(""))]
        return events

    def delta(self, text: str) -> list[tuple[str, dict]]:
        """Events for new text (none while tools hold the output back)."""
        self.text += text
        if self.tools or not text:
            return []
        return [self.event("response.output_text.delta", item_id=self.message_id, output_index=0, content_index=0,
                           delta=text, logprobs=[])]

    def finish(self, finish: str, usage: dict) -> tuple[list[tuple[str, dict]], dict]:
        """The closing events and the final response object."""
        items, status, reason = self.output(self.text, finish)
        events = []
        for index, item in enumerate(items):
            if item["type"] == "message":
                text = item["content"][0]["text"]
                if self.tools:  # held back until now: open the item and its part first
                    events += [self.event("response.output_item.added", output_index=index,
                                          item={**item, "status": "in_progress", "content": []}),
                               self.event("response.content_part.added", item_id=item["id"], output_index=index,
                                          content_index=0, part=self._part("")),
                               self.event("response.output_text.delta", item_id=item["id"], output_index=index,
                                          content_index=0, delta=text, logprobs=[])]
                events += [self.event("response.output_text.done", item_id=item["id"], output_index=index,
                                      content_index=0, text=text, logprobs=[]),
                           self.event("response.content_part.done", item_id=item["id"], output_index=index,
                                      content_index=0, part=self._part(text))]
            else:
                events += [self.event("response.output_item.added", output_index=index,
                                      item={**item, "arguments": "", "status": "in_progress"}),
                           self.event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=index, delta=item["arguments"]),
                           self.event("response.function_call_arguments.done", item_id=item["id"],
                                      output_index=index, arguments=item["arguments"], name=item["name"])]
            events.append(self.event("response.output_item.done", output_index=index, item=item))
        final = self.response(status, items, usage, reason)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        events.append(self.event(kind, response=final))
        return events, final

    def failed(self, error: dict) -> list[tuple[str, dict]]:
        """An ``error`` event and ``response.failed`` for a generation that failed mid-stream."""
        return [self.event("error", code=error.get("code"), message=error["message"], param=error.get("param")),
                self.event("response.failed", response=self.response("failed", [], error={
                    "code": error.get("code") or "server_error", "message": error["message"]}))]
