"""Unbounded multi-round chat on a sink cache (StreamingLLM, Sec. 4.4 "streaming question answering" setting).

Each turn feeds only its new tokens (the chat template's increment) into the same
:class:`SinkCache`, so the conversation never runs out of context and memory stays constant;
what the cache evicted is forgotten (StreamingLLM extends the stream, not the memory) unless
``memory`` is on: then evicted text goes into a retrieval index
(:class:`tenfold.retrieval.memory.StreamingMemory`) and each user turn starts with the evicted
chunks most relevant to it.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import torch

from tenfold.models.sampling import Sampler, stop_token_ids
from tenfold.models.quantize import weights_label
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.sink_cache import SinkCache, enable_streaming, prefill


class StreamingChat:
    """A conversation with one model and one sink cache. ``say(text)`` yields reply text pieces."""

    def __init__(self, model, tokenizer, config: SinkConfig | None = None, system: str | None = None,
                 max_new_tokens: int = 256, temperature: float = 0.0, top_p: float = 0.9, seed: int = 0,
                 memory: bool | dict = False, sampler: Sampler | None = None, decoder=None):
        """``config``: the sink cache (:class:`~tenfold.streaming.SinkConfig`, default 4+1020).
        ``memory``: True, or keyword arguments for ``StreamingMemory`` (k, min_score, embedder, ...).
        ``sampler``: full sampling settings (top-k, min-p, penalties over the reply's tokens); replaces
        ``temperature`` and ``top_p`` when given.
        ``decoder``: a :class:`~tenfold.streaming.compiled.CompiledDecoder` for this model and cache size, to decode
        through its compiled graph (not with ``memory``). Raises ValueError for a decoder of another size."""
        self.model, self.tok = enable_streaming(model), tokenizer
        self.cache = SinkCache(config=config if config is not None else SinkConfig())
        if decoder is not None and (decoder.size != self.cache.size or decoder.num_sinks != self.cache.num_sinks
                                    or memory or decoder.model is not model):
            raise ValueError("the compiled decoder must be built for this model and cache size, without memory")
        self.decoder = decoder
        self.memory = None
        if memory:
            from tenfold.retrieval.memory import StreamingMemory

            self.memory = StreamingMemory(model, tokenizer, self.cache, **(memory if isinstance(memory, dict) else {}))
        self.system, self.max_new_tokens = system, max_new_tokens
        self.sampler = sampler if sampler is not None else Sampler(temperature, top_p)
        self.temperature, self.top_p = self.sampler.temperature, self.sampler.top_p
        self.generator = torch.Generator().manual_seed(seed)
        self.stop_ids = stop_token_ids(tokenizer)
        self.reset()

    def reset(self) -> None:
        if self.memory is not None:
            self.memory.reset()  # empties the cache too
        self.cache.reset()
        self.messages = [{"role": "system", "content": self.system}] if self.system else []
        self.rendered, self.pending = "", ""
        self.generated, self.gen_seconds = 0, 0.0
        self.last_recalled: list[str] = []
        self.turn_dropped = False  # the last say() was stopped while reading its turn (see say)

    def _render(self, messages, prompt: bool) -> str:
        if getattr(self.tok, "chat_template", None):
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        text = "".join(f"{m['role']}: {m['content']}\n" for m in messages)
        return text + ("assistant:" if prompt else "")

    def _increment(self, user: str) -> str:
        before = self._render(self.messages, prompt=False) if self.messages else ""
        after = self._render(self.messages + [{"role": "user", "content": user}], prompt=True)
        delta = after[len(before):] if after.startswith(before) else after
        return self.pending + delta

    @torch.no_grad()
    def say(self, user: str, should_stop=None) -> Iterator[str]:
        """Feed ``user``'s turn and yield the reply in text pieces.

        ``should_stop()``, if given, is asked before each new token; when it says True the reply ends there, as if
        it had reached ``max_new_tokens``: the cache then holds exactly the turn and the reply tokens shown, and
        the conversation goes on from them (the CLI's Ctrl-C during a reply). It is also asked between prefill
        chunks while a long turn is read in: if it says True there, the turn is dropped whole (the cache goes back
        to its state before the turn, nothing is yielded and ``turn_dropped`` is True), as if it was never sent.
        Closing the generator early instead (or an exception inside a forward pass) can leave the cache ahead of
        the conversation: use ``reset()``.
        """
        self.turn_dropped = False
        if not user.strip():
            raise ValueError("empty message")
        content, hits = user, []
        if self.memory is not None:
            block, hits = self.memory.recall_block(user)
            content = f"{block}\n{user}" if hits else user
        text = self._increment(content)
        if self.memory is not None:
            at = text.find(content)
            spans = [(at, at + len(content) - len(user))] if hits and at >= 0 else []
            logits = self.memory.feed(text, skip=spans)
            if hits:
                self.memory.mark_recalled(hits)
        else:
            ids = self.tok(text, return_tensors="pt", add_special_tokens=False).input_ids
            logits = self._prefill(ids, should_stop)
            if logits is None:
                self.turn_dropped, self.last_recalled = True, []
                return
        self.last_recalled = [h.text for h in hits]
        reply_ids, shown = [], ""
        sampling = self.sampler.start()  # the penalties cover the reply's tokens
        start = time.perf_counter()
        for _ in range(self.max_new_tokens):
            if should_stop is not None and should_stop():
                break  # every token in reply_ids has been fed: the cache matches the conversation
            nxt = sampling.sample(logits, self.generator)
            if nxt in self.stop_ids:
                break
            reply_ids.append(nxt)
            sampling.accept(nxt)
            full = self.tok.decode(reply_ids, skip_special_tokens=True)
            if len(full) > len(shown) and not full.endswith("\ufffd"):
                yield full[len(shown):]
                shown = full
            if self.memory is not None:
                logits = self.memory.step(nxt)
            elif self.decoder is not None:
                logits = self.decoder.step(self.cache, torch.tensor([nxt]))[0]
            else:
                logits = self.model(input_ids=torch.tensor([[nxt]], device=self.model.device), cache=self.cache, use_cache=True).logits[0, -1]
        self.gen_seconds += time.perf_counter() - start
        self.generated += len(reply_ids)
        reply = self.tok.decode(reply_ids, skip_special_tokens=True)
        self.messages.append({"role": "user", "content": content})
        self.messages.append({"role": "assistant", "content": reply})
        # The template's closing text after the reply (e.g. "<|im_end|>\n") is fed with the next turn.
        fed_prefix = self._render(self.messages[:-1], prompt=True) + reply
        closing = self._render(self.messages, prompt=False)
        self.pending = closing[len(fed_prefix):] if closing.startswith(fed_prefix) else ""
        # Keep the message list bounded: the template increment only needs the first and last messages.
        head = self.messages[:1] if self.system else []
        self.messages = head + self.messages[len(head):][-2:]

    def _prefill(self, ids: torch.Tensor, should_stop=None):
        """The last position's logits after feeding ``ids`` (1, T) chunk by chunk; None, with the cache restored to
        its state before, when ``should_stop()`` says True between two chunks."""
        step = self.cache.prefill_chunk
        if should_stop is None or ids.shape[1] <= step:
            return prefill(self.model, self.cache, ids, logits_to_keep=1)[0, -1]
        before = self.cache.copy()  # holds only the filled columns: cheap beside the prefill it guards
        for start in range(0, ids.shape[1], step):
            if should_stop():
                self.cache = before
                return None
            logits = prefill(self.model, self.cache, ids[:, start:start + step], logits_to_keep=1)
        return logits[0, -1]

    def stats(self) -> dict:
        c = self.cache
        return {"cache": c.config.label(), "cache_fill": int(c.fill().sum()), "cache_size": c.size,
                "tokens_seen": int(c.tokens_seen.sum()), "evicted": int(c.evicted.sum()), "rebases": c.rebases,
                "prefill_chunk": c.prefill_chunk,
                "generated": self.generated, "weights": weights_label(self.model),
                "decode": "compiled" if self.decoder is not None else "eager",
                "tokens_per_s": round(self.generated / self.gen_seconds, 2) if self.gen_seconds else None,
                **(self.memory.stats() if self.memory is not None else {})}
