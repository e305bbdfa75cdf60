"""Structured output for ``tenfold serve``: JSON mode, JSON schemas and tool calls, enforced by a grammar engine.

Library: llguidance (Microsoft's Rust engine behind guidance; also used by vLLM, SGLang and llama.cpp). It takes a
JSON schema or a Lark grammar, needs no torch of its own (so it cannot pull in another torch build), and computes
each step's allowed-token mask in microseconds. At every decoding step the mask sets the logits of tokens that would
break the grammar to -inf before sampling (a logits processor), so the output always parses.

- ``response_format: {"type": "json_object"}``: any JSON object.
- ``response_format: {"type": "json_schema", "json_schema": {"schema": ...}}``: JSON matching the schema.
- ``tools`` with ``tool_choice``: the model calls functions in the Hermes / Qwen style
  ``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``. ``required`` and a named function force one or more
  calls (arguments matching the function's ``parameters`` schema); ``auto`` leaves the model free to write text, and
  once it opens ``<tool_call>`` the call must be well formed (llguidance's lazy structural tags); ``none`` adds no
  constraint. The calls are returned as OpenAI ``tool_calls``; assistant ``tool_calls`` sent back in later turns are
  rendered as the same text, so a conversation round-trips through the chat template (and its session cache).
"""
from __future__ import annotations

import json
import uuid
from functools import cached_property

import torch

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"


class GrammarError(ValueError):
    """A schema or tool definition the grammar engine cannot use (HTTP 400)."""


class Constraint:
    """One choice's grammar state: masks the next token's logits, then follows the sampled token."""

    def __init__(self, matcher, vocab_size: int):
        import llguidance.torch as llt

        self.matcher, self._llt = matcher, llt
        self.bitmask = llt.allocate_token_bitmask(1, vocab_size)

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) logits with every token the grammar forbids now set to -inf (a new float32 tensor)."""
        out = logits.float().cpu().clone()[None]  # the grammar's bitmask is applied on the CPU (as the sampler runs)
        self._llt.fill_next_token_bitmask(self.matcher, self.bitmask, 0)
        self._llt.apply_token_bitmask_inplace(out, self.bitmask)
        return out[0]

    def consume(self, token: int) -> None:
        self.matcher.consume_token(int(token))
        if self.matcher.is_error():  # e.g. a schema too complex for the engine's limits, found while generating
            raise GrammarError(f"the grammar engine stopped: {self.matcher.get_error().splitlines()[0][:300]}")

    @property
    def finished(self) -> bool:
        """True when the grammar admits nothing more (the output is complete)."""
        return self.matcher.is_stopped()


class Grammars:
    """Builds llguidance grammars for one tokenizer (the tokenizer wrapper is made once, on first use)."""

    def __init__(self, tokenizer, vocab_size: int, eos_ids: set[int]):
        self.tok, self.vocab_size, self.eos_ids = tokenizer, vocab_size, sorted(eos_ids)

    @cached_property
    def lltokenizer(self):
        import llguidance.hf

        return llguidance.hf.from_tokenizer(self.tok, n_vocab=self.vocab_size, eos_token=self.eos_ids)

    def check(self, grammar: str, needs_output: bool = False) -> str:
        """``grammar`` if llguidance accepts it and can start matching; GrammarError with its message otherwise.

        A matcher is built and its first mask computed, so errors the engine finds lazily surface here as a 400.
        ``needs_output``: also refuse a grammar that accepts only the empty output (a schema no JSON value meets).
        """
        from llguidance import LLMatcher

        is_error, messages = LLMatcher.validate_grammar_with_warnings(grammar, self.lltokenizer)
        if is_error:
            raise GrammarError("; ".join(messages)[:500] or "invalid grammar")
        trial = Constraint(LLMatcher(self.lltokenizer, grammar, log_level=0), self.vocab_size)
        allowed = trial.mask(torch.zeros(self.vocab_size))
        if trial.matcher.is_error():
            reason = trial.matcher.get_error().splitlines()[0][:400]
            hint = " (is the schema only a reference to itself?)" if needs_output else ""
            raise GrammarError(f"the grammar engine cannot start on this schema: {reason}{hint}")
        if needs_output and (trial.matcher.is_accepting() or not bool((allowed > float("-inf")).any())):
            raise GrammarError("no JSON value can satisfy this schema (is it only a reference to itself?)")
        return grammar

    def factory(self, grammar: str):
        """A function making a fresh :class:`Constraint` per choice."""
        from llguidance import LLMatcher

        return lambda: Constraint(LLMatcher(self.lltokenizer, grammar, log_level=0), self.vocab_size)

    # -- grammars --------------------------------------------------------------------------------
    def json_grammar(self, schema: dict | None) -> str:
        from llguidance import LLMatcher

        schema = {"type": "object"} if schema is None else schema
        try:
            grammar = LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        except Exception as exc:  # noqa: BLE001 - any failure to compile the user's schema is the user's 400
            raise GrammarError(f"the JSON schema cannot be used: {str(exc)[:300]}") from None
        return self.check(grammar, needs_output=True)

    def tools_grammar(self, tools: list[dict], choice: str | dict, parallel: bool) -> str | None:
        """The grammar for ``tools`` under ``tool_choice`` (None for ``none``)."""
        from llguidance import LLMatcher, StructTag

        if choice == "none":
            return None
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            tools = [t for t in tools if t["function"]["name"] == name]
        call = {"anyOf": [_call_schema(t) for t in tools]} if len(tools) > 1 else _call_schema(tools[0])
        try:
            if choice == "auto":
                tag = StructTag(trigger=CALL_OPEN, begin=CALL_OPEN, grammar=call, end=CALL_CLOSE)
                return self.check(StructTag.to_grammar([tag], assume_special=False))
            more = ' ("\\n" call)*' if parallel else ""
            lark = f'start: call{more}\ncall: "{CALL_OPEN}" %json {json.dumps(call)} "{CALL_CLOSE}"\n'
            return self.check(LLMatcher.grammar_from_lark(lark))
        except GrammarError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's tool schemas
            raise GrammarError(f"the tool definitions cannot be used: {str(exc)[:300]}") from None


def _call_schema(tool: dict) -> dict:
    """One call's JSON schema. Arguments take only the declared properties unless the tool's schema says otherwise
    (``additionalProperties`` unset means false here, as in OpenAI's strict mode): small models otherwise ramble."""
    fn = tool["function"]
    params = dict(fn.get("parameters") or {"type": "object", "properties": {}})
    if params.get("type") == "object":
        params.setdefault("additionalProperties", False)
    return {"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
            "required": ["name", "arguments"], "additionalProperties": False,
            "x-guidance": {"whitespace_flexible": False}}


def tools_prompt(tools: list[dict]) -> str:
    """A system-prompt section describing the tools and the call format, for chat templates that ignore ``tools``."""
    lines = ["You can call these functions:"]
    for t in tools:
        fn = t["function"]
        lines.append(json.dumps({"name": fn["name"], "description": fn.get("description", ""),
                                 "parameters": fn.get("parameters", {})}))
    lines.append(f'To call a function, reply with {CALL_OPEN}{{"name": <function name>, "arguments": <JSON object>}}'
                 f"{CALL_CLOSE}")
    return "\n".join(lines)


def call_text(tool_calls: list[dict]) -> str:
    """Assistant ``tool_calls`` (OpenAI shape) as the text the model writes for them."""
    parts = []
    for call in tool_calls:
        fn = call.get("function") or {}
        args = fn.get("arguments", "{}")
        try:
            args = json.loads(args) if isinstance(args, str) else args
        except (ValueError, RecursionError):  # not JSON (or absurdly deep): kept as the string it is
            pass
        try:
            body = json.dumps({"name": fn.get("name"), "arguments": args}, separators=(",", ":"))
        except (ValueError, RecursionError):
            body = json.dumps({"name": fn.get("name"), "arguments": str(fn.get("arguments"))}, separators=(",", ":"))
        parts.append(CALL_OPEN + body + CALL_CLOSE)  # compact, as the grammar makes the model write it
    return "\n".join(parts)


def parse_calls(text: str, truncated: bool = False) -> tuple[str | None, list[dict]]:
    """Split generated text into (content, OpenAI ``tool_calls``), following the grammar's own structure.

    A call is ``<tool_call>``, one JSON object ``{"name": str, "arguments": object}`` read by a JSON decoder (so a
    ``</tool_call>`` inside a string argument is just text), then ``</tool_call>``. Anything else, a call that does
    not parse included, stays in the content. ``truncated`` (the token limit cut the text): a call cut off before
    it closed is dropped when complete calls came before it (the answer is those calls, marked cut by its finish
    reason); when nothing else was produced it stays as the content, so the client sees whatever was produced
    (issue 38 D3), never an empty answer.
    """
    decoder = json.JSONDecoder()
    calls, rest, last, at = [], [], 0, text.find(CALL_OPEN)
    while at != -1:
        start = at + len(CALL_OPEN)
        body = len(text[start:]) - len(text[start:].lstrip())
        try:
            data, end = decoder.raw_decode(text, start + body)
            close = end + len(text[end:]) - len(text[end:].lstrip())
            if not text.startswith(CALL_CLOSE, close) or not isinstance(data, dict) or \
                    not isinstance(data.get("name"), str) or "arguments" not in data:
                raise ValueError("not a call")
        except (ValueError, RecursionError):
            at = text.find(CALL_OPEN, start)
            continue
        rest.append(text[last:at])
        last = close + len(CALL_CLOSE)
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": data["name"], "arguments": json.dumps(data["arguments"])}})
        at = text.find(CALL_OPEN, last)
    tail = text[last:]
    if truncated and calls and tail.lstrip().startswith(CALL_OPEN):
        tail = ""  # the cut-off start of one more call
    rest.append(tail)
    content = "".join(rest).strip()
    return (content or None), calls
