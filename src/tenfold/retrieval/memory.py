"""A retrieval memory for what a sink cache evicts (StreamingLLM Sec. 4.4 + Xu et al. Sec. 3).

StreamingLLM extends the stream, not the memory: once a token leaves the rolling cache the model
cannot see it again. :class:`StreamingMemory` owns the feeding of one sink-cache session and logs
every token with the text it came from. Whatever the cache evicts is cut into line-sized chunks
(long lines into pieces of at most ``chunk_words`` words and the embedder's token limit, see
:class:`~tenfold.retrieval.chunking.Chunker`), embedded and added to a FAISS index; before a new turn,
:meth:`StreamingMemory.recall` retrieves the evicted chunks most relevant to it, and
:meth:`StreamingMemory.feed` can put them back into the stream (marked as recalled, so they are
never archived twice and are not recalled again while still in the cache).
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch

from tenfold.errors import TenfoldError
from tenfold.retrieval.chunking import count_words
from tenfold.retrieval.retriever import Embedder, Hit, Retriever
from tenfold.streaming.sink_cache import SinkCache, enable_streaming, prefill

DEFAULT_HEADER = "Recalled from earlier in this conversation:\n"


@dataclass
class _Token:
    end: int  # global character offset where the token's text ends
    skip: bool  # kept out of the memory (recalled text, or text the caller marked)


class StreamingMemory:
    """One sink-cache session whose evicted text goes into a retrieval index.

    ``feed(text)`` / ``step(token_id)`` run the model on new tokens (use them instead of calling the
    model directly, so the memory knows what the cache holds); ``recall(query)`` returns
    :class:`~tenfold.retrieval.retriever.Hit` s from the evicted text with score >= ``min_score``;
    ``recall_block(query)`` renders them as text to feed before the query.

    ``margin``: text within this many tokens of eviction is indexed early (default: a quarter of the
    window), so what a new turn's own tokens push out of the cache is already retrievable for it.
    ``chunk_words``: lines longer than this are split into chunks of this many words.
    """

    def __init__(self, model, tokenizer, cache: SinkCache, embedder: Embedder | None = None, k: int = 3,
                 min_score: float = 0.25, chunk_words: int = 100, min_words: int = 3, margin: int | None = None):
        if not isinstance(k, int) or k < 1:
            raise TenfoldError(f"memory k must be an integer >= 1 (got {k!r})")
        if not -1.0 <= float(min_score) <= 1.0:
            raise TenfoldError(f"memory min_score is a cosine similarity in [-1, 1] (got {min_score!r})")
        if not isinstance(chunk_words, int) or chunk_words < 1:
            raise TenfoldError(f"memory chunk_words must be an integer >= 1 (got {chunk_words!r})")
        self.model, self.tok, self.cache = enable_streaming(model), tokenizer, cache
        self.k, self.min_score, self.chunk_words, self.min_words = k, float(min_score), chunk_words, min_words
        self.margin = cache.window // 4 if margin is None else margin
        if not isinstance(self.margin, int) or not 0 <= self.margin <= cache.window:
            raise TenfoldError(f"memory margin must be an integer between 0 and the window ({cache.window})")
        self.retriever = Retriever(embedder or Embedder())
        self._chunker = self.retriever.embedder.chunker(chunk_words)
        self._special = sorted({t for t in getattr(tokenizer, "all_special_tokens", []) if t}, key=len, reverse=True)
        self.reset()

    # -- state -------------------------------------------------------------------------------
    def reset(self) -> None:
        """Empty the cache, the token log and the index."""
        self.cache.reset()
        self.retriever.clear()
        self._text, self._text_base = "", 0  # text of logged tokens not yet archived, its global offset
        self._tokens: deque[_Token] = deque()  # logged tokens from global index self._first on
        self._first, self._first_start = 0, 0  # global index and start character of the first logged token
        self._archived = 0  # global token index up to which eviction has been processed
        self._pending = ""  # archived text not yet ending a line
        self._skip_to = 0  # global character offset before which text is already in the index
        self._recalled: dict[int, int] = {}  # chunk id -> global token index where its last recall ends
        self._reply: list[int] = []
        self._reply_text = ""
        self.archived_tokens = 0
        self.recalls = 0

    def __len__(self) -> int:
        """Chunks in the memory."""
        return len(self.retriever.index)

    @property
    def tokens_logged(self) -> int:
        return self._first + len(self._tokens)

    def stats(self) -> dict:
        return {"memory_chunks": len(self), "memory_tokens_archived": self.archived_tokens,
                "memory_recalls": self.recalls}

    # -- feeding -----------------------------------------------------------------------------
    def _log(self, text: str, ends: list[int], skip) -> None:
        """Append tokens ending at ``ends`` (offsets into ``text``); ``skip``: a bool or (start, end) spans."""
        base = self._text_base + len(self._text)
        self._text += text
        spans = [(0, len(text))] if skip is True else (skip or [])
        last = 0
        for e in ends:
            start, last = last, max(last, min(e, len(text)))
            flagged = any(a <= start < b for a, b in spans)
            self._tokens.append(_Token(base + last, flagged))

    def _token_ends(self, text: str, ids: list[int]) -> list[int]:
        enc = None
        if getattr(self.tok, "is_fast", False):
            enc = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        if enc is not None and list(enc["input_ids"]) == ids:
            ends = [e for _, e in enc["offset_mapping"]]
        else:  # slow tokenizer: cumulative decoding
            ends = [len(self.tok.decode(ids[: i + 1])) for i in range(len(ids))]
        if ends:
            ends[-1] = len(text)
        return ends

    @torch.no_grad()
    def feed(self, text: str, skip: bool | list[tuple[int, int]] = False) -> torch.Tensor:
        """Stream ``text`` through the cache; return the logits after its last token (vocab,).

        ``skip``: keep the text out of the memory when it is evicted: True for all of it, or its
        (start, end) character spans (text recalled from memory is fed this way, so it is never
        archived twice).
        """
        self._end_reply()
        ids = self.tok(text, add_special_tokens=False).input_ids
        if not ids:
            raise TenfoldError("nothing to feed: the text has no tokens")
        self._log(text, self._token_ends(text, ids), skip)
        logits = prefill(self.model, self.cache, torch.tensor([ids], device=self.model.device))[0, -1]
        self._archive()
        return logits

    @torch.no_grad()
    def step(self, token: int, skip: bool = False) -> torch.Tensor:
        """Feed one generated token (``skip``: keep it out of the memory); return the next logits (vocab,)."""
        self._reply.append(int(token))
        full = self.tok.decode(self._reply, skip_special_tokens=False)
        piece = "" if full.endswith("\ufffd") else full[len(self._reply_text):]
        self._reply_text += piece
        self._log(piece, [len(piece)], skip)
        logits = self.model(input_ids=torch.tensor([[int(token)]], device=self.model.device), cache=self.cache, use_cache=True).logits[0, -1]
        self._archive()
        return logits

    def _end_reply(self) -> None:
        if self._reply:
            full = self.tok.decode(self._reply, skip_special_tokens=False)
            if len(full) > len(self._reply_text):  # text held back by an incomplete character
                self._text += full[len(self._reply_text):]
                if self._tokens:
                    self._tokens[-1].end = self._text_base + len(self._text)
        self._reply, self._reply_text = [], ""

    # -- archiving evicted text -----------------------------------------------------------------
    def _archive(self) -> None:
        """Move the text of newly evicted tokens into the index.

        Text is archived by lines: a line whose first tokens were evicted goes into the index whole
        as soon as its end has been fed (its tail is then skipped when it is evicted in turn), so a
        fact is retrievable from the moment the model can no longer see all of it.
        """
        seen, evicted, fill = _row_counts(self.cache)
        sinks = min(self.cache.num_sinks, seen)
        if self._archived < sinks:
            self._archived = sinks
        ahead = max(0, fill + self.margin - self.cache.size)
        upto = min(sinks + evicted + ahead, self.tokens_logged)
        if upto <= self._archived:
            return
        runs = []  # (start char, end char, skipped) of consecutive evicted tokens
        for g in range(self._archived, upto):
            tok = self._tokens[g - self._first]
            a = self._char_start(g)
            if runs and runs[-1][2] == tok.skip:
                runs[-1][1] = tok.end
            else:
                runs.append([a, tok.end, tok.skip])
        self.archived_tokens += upto - self._archived
        self._archived = upto
        for a, b, skipped in runs:
            if skipped:
                self._flush(final=True)
                continue
            a = max(a, self._skip_to)
            if a < b:
                self._pending += self._slice(a, b)
            self._flush(final=False)
        if self._pending and self._skip_to < runs[-1][1]:
            self._complete_line(runs[-1][1])
        self._trim()

    def _complete_line(self, evicted_end: int) -> None:
        """Archive the partly evicted line now, with its still-cached tail (when its end has been fed)."""
        rest = self._text[evicted_end - self._text_base :]
        newline = rest.find("\n")
        if newline < 0 or count_words(self._pending) + count_words(rest[:newline]) > 2 * self.chunk_words:
            return
        self._pending += rest[: newline + 1]
        self._skip_to = evicted_end + newline + 1
        self._flush(final=False)

    def _char_start(self, g: int) -> int:
        return self._first_start if g == self._first else self._tokens[g - 1 - self._first].end

    def _slice(self, a: int, b: int) -> str:
        return self._text[a - self._text_base : b - self._text_base]

    def _trim(self) -> None:
        """Forget logged tokens that are archived (or are sinks, which never leave the cache)."""
        while self._first < self._archived and self._tokens:
            self._first_start = self._tokens.popleft().end
            self._first += 1
        self._text = self._text[self._first_start - self._text_base :]
        self._text_base = self._first_start

    def _clean(self, text: str) -> str:
        for s in self._special:
            text = text.replace(s, " ")
        return " ".join(text.split())

    def _flush(self, final: bool) -> None:
        lines = self._pending.split("\n")
        self._pending = "" if final else lines.pop()
        units, carry = [], ""
        for line in lines:
            line = (carry + " " + self._clean(line)).strip()
            if count_words(line) < self.min_words:
                carry = line  # a role label or a short fragment joins the next line
                continue
            units.append(line)
            carry = ""
        if carry:
            self._pending = carry + "\n" + self._pending
        if count_words(self._pending) >= 2 * self.chunk_words:  # a long run without a newline
            pieces = self._chunker.split(self._pending)
            units.extend(p.text for p in pieces[:-1])
            self._pending = pieces[-1].text
        texts = [c.text for u in units for c in self._chunker.split(u)]
        if texts:
            self.retriever.add_texts(texts, [{"tokens_seen": _row_counts(self.cache)[0]}] * len(texts))

    # -- recall ------------------------------------------------------------------------------
    def recall(self, query: str, k: int | None = None) -> list[Hit]:
        """Evicted chunks most similar to ``query`` (score >= min_score), skipping those recalled and still cached."""
        if not query.strip() or not len(self):
            return []
        k = k or self.k
        seen, evicted, _ = _row_counts(self.cache)
        evicted_to = min(self.cache.num_sinks, seen) + evicted
        # forget recalls whose copies have left the cache: those chunks may be offered again
        self._recalled = {i: end for i, end in self._recalled.items() if end > evicted_to}
        hits = self.retriever.search(query, k + len(self._recalled))
        fresh = [h for h in hits if h.score >= self.min_score and h.index not in self._recalled]
        return fresh[:k]

    def recall_block(self, query: str, header: str = DEFAULT_HEADER) -> tuple[str, list[Hit]]:
        """Text to feed (with ``skip=True``) before ``query``: the header and one recalled chunk per line."""
        hits = self.recall(query)
        if not hits:
            return "", []
        return header + "".join(h.text + "\n" for h in hits), hits

    def feed_recall(self, query: str, header: str = DEFAULT_HEADER) -> list[Hit]:
        """Recall for ``query`` and feed the block into the stream now; returns the hits fed."""
        block, hits = self.recall_block(query, header)
        if hits:
            self.feed(block, skip=True)
            self.mark_recalled(hits)
        return hits

    def mark_recalled(self, hits: list[Hit]) -> None:
        """Record that ``hits`` were just fed (by a caller that put the block inside a larger text)."""
        end = self.tokens_logged
        for h in hits:
            self._recalled[h.index] = end
        self.recalls += 1


def _row_counts(cache) -> tuple[int, int, int]:
    """(tokens seen, evicted, held now) of a one-row sink cache (0s before its first step)."""
    return int(cache.tokens_seen.sum()), int(cache.evicted.sum()), int(cache.fill().sum())
