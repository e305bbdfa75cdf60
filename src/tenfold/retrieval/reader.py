"""Answering questions about a long document under a token budget (Xu et al., Sec. 3-4).

Modes, all inside one context window of ``window`` tokens (prompt + answer):
- ``long``: no retrieval; as much of the document as fits, its beginning and its end (the middle
  is cut, as long-context benchmarks truncate);
- ``retrieve``: the top-``k`` chunks by dense retrieval, best first (300-word chunks by default);
- ``both``: the top-``k`` chunks, then as much of the rest of the document as still fits.
Each answer records the prompt tokens processed and the wall time.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from tenfold.errors import TenfoldError
from tenfold.models.lm import chat_ids

MODES = ("long", "retrieve", "both")
SYSTEM = "Answer the question from the document. Reply with the answer only, in a few words."


@dataclass
class Answer:
    answer: str
    mode: str
    prompt_tokens: int
    seconds: float
    chunks: list[dict] = field(default_factory=list)  # retrieved chunks: text, score
    context: str = field(default="", repr=False)  # the document text the prompt held

    def as_dict(self) -> dict:
        return {"answer": self.answer, "mode": self.mode, "prompt_tokens": self.prompt_tokens,
                "seconds": self.seconds, "chunks": self.chunks}


class Reader:
    def __init__(self, model, tokenizer, window: int = 2048, max_new_tokens: int = 24):
        limit = getattr(model.config, "max_position_embeddings", None)
        if window < 128:
            raise TenfoldError(f"the window must be at least 128 tokens (got {window})")
        if limit and window > limit:
            raise TenfoldError(f"the window ({window}) is longer than the model's {limit} positions")
        self.model, self.tok, self.window, self.max_new_tokens = model, tokenizer, window, max_new_tokens

    def _messages(self, context: str, question: str) -> list[dict]:
        return [{"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"Document:\n{context}\n\nQuestion: {question}"}]

    def _budget(self, question: str) -> int:
        overhead = chat_ids(self.tok, self._messages("", question)).shape[1]
        budget = self.window - self.max_new_tokens - overhead
        if budget < 16:
            raise TenfoldError(f"the question leaves no room for the document in a {self.window}-token window")
        return budget

    def _ids(self, text: str) -> list[int]:
        return self.tok(text, add_special_tokens=False).input_ids

    def _head_tail(self, ids: list[int], budget: int) -> str:
        if len(ids) <= budget:
            return self.tok.decode(ids)
        head = budget // 2
        return self.tok.decode(ids[:head]) + "\n[...]\n" + self.tok.decode(ids[len(ids) - (budget - head - 4) :])

    def _fit_chunks(self, hits, budget: int) -> tuple[list[str], list[dict], int]:
        texts, used, shown = [], 0, []
        for h in hits:
            n = len(self._ids(h.text)) + 2
            if used + n > budget:
                break
            texts.append(h.text)
            shown.append({"text": h.text, "score": h.score})
            used += n
        return texts, shown, used

    @torch.no_grad()
    def ask(self, question: str, document: str | None = None, retriever=None, mode: str = "retrieve",
            k: int = 5) -> Answer:
        if mode not in MODES:
            raise TenfoldError(f"unknown mode {mode!r}; choose one of: {', '.join(MODES)}")
        if not question.strip():
            raise TenfoldError("the question is empty")
        if mode in ("long", "both") and not (document or "").strip():
            raise TenfoldError(f"mode {mode!r} needs the document text")
        if mode in ("retrieve", "both") and retriever is None:
            raise TenfoldError(f"mode {mode!r} needs a retriever (an index of the document)")
        budget = self._budget(question)
        start = time.perf_counter()
        shown: list[dict] = []
        if mode == "long":
            context = self._head_tail(self._ids(document), budget)
        else:
            texts, shown, used = self._fit_chunks(retriever.search(question, k), budget)
            context = "\n\n".join(texts)
            if mode == "both" and budget - used > 32:
                picked = set(texts)
                rest = " ".join(t for t in retriever.index.texts if t not in picked) if document is None else document
                context = context + "\n\n" + self._head_tail(self._ids(rest), budget - used - 8)
        ids = chat_ids(self.tok, self._messages(context, question))
        ids = ids[:, -(self.window - self.max_new_tokens) :].to(self.model.device)  # a guard: the budget keeps it inside
        out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=self.max_new_tokens,
                                  do_sample=False, pad_token_id=self.tok.pad_token_id, top_p=None, top_k=None,
                                  temperature=None)
        answer = self.tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True).strip()
        return Answer(answer, mode, int(ids.shape[1]), time.perf_counter() - start, shown, context)
