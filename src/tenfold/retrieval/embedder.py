"""Normalised sentence embeddings that say what they read (Xu et al. Sec. 3: dense retrievers).

A sentence-transformers model reads at most ``max_seq_length`` tokens of a text and silently drops
the rest. :class:`Embedder` shows that limit, counts every text's tokens, and warns (with a count)
whenever a text is longer than what the model reads, so no text is cut without a word. The limit
can be raised up to the model's position limit (all-MiniLM-L6-v2: trained at 256, 512 positions).
"""
from __future__ import annotations

import warnings

import numpy as np

from tenfold.errors import TenfoldError

# Measured on the needle QA (see the README's retrieval section and issue 26): 256 vs 512.
DEFAULT_MAX_SEQ_LENGTH = 256


class TruncationWarning(UserWarning):
    """Some text was longer than the embedder reads: its end is not in the embedding."""


class UnknownTextWarning(UserWarning):
    """Some text maps to the embedder's unknown token (e.g. Thai for an English WordPiece vocabulary): the
    embedding does not see it; BM25 (``--retriever bm25``) reads any script."""


class Embedder:
    """Normalised sentence embeddings (the bundled all-MiniLM-L6-v2 by default, or any sentence-transformers model).

    ``max_seq_length``: tokens the model reads, special tokens included (default: 256 for the bundled
    model, the model's own setting otherwise); at most the model's position limit, else TenfoldError.
    ``coverage`` accumulates, over every text encoded: texts, tokens, and tokens beyond the limit.
    """

    def __init__(self, model=None, batch_size: int = 64, max_seq_length: int | None = None, device=None):
        from tenfold.models import DEFAULT_EMBEDDER, load_embedder

        if model is None or isinstance(model, str):
            bundled = (model or DEFAULT_EMBEDDER).lower() == DEFAULT_EMBEDDER
            self.name = DEFAULT_EMBEDDER if bundled else model
            model = load_embedder(model, device=device)
        else:
            card = getattr(model, "model_card_data", None)
            self.name = getattr(card, "base_model", None) or "custom"
            bundled = False
        self.model, self.batch_size = model, batch_size
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dim())
        config = getattr(getattr(model[0], "auto_model", None), "config", None) if hasattr(model, "__getitem__") else None
        self.position_limit = getattr(config, "max_position_embeddings", None)
        if max_seq_length is None and bundled:
            max_seq_length = DEFAULT_MAX_SEQ_LENGTH
        if max_seq_length is not None:
            if not isinstance(max_seq_length, int) or max_seq_length < 8:
                raise TenfoldError(f"max_seq_length must be an integer >= 8 (got {max_seq_length!r})")
            if self.position_limit and max_seq_length > self.position_limit:
                raise TenfoldError(f"max_seq_length {max_seq_length} is beyond the embedder's "
                                   f"{self.position_limit} positions")
            model.max_seq_length = max_seq_length
        self.max_seq_length = int(model.max_seq_length)
        self._counter = self._token_counter(model.tokenizer)
        self._spans = self._unknown_spans(model.tokenizer)
        self.special_tokens = self._counter("", True)
        self.max_tokens = self.max_seq_length - self.special_tokens  # text tokens read, special tokens aside
        self.coverage = {"texts": 0, "tokens": 0, "tokens_beyond_limit": 0, "texts_cut": 0,
                         "unknown_tokens": 0, "unknown_chars": 0, "texts_with_unknown": 0}

    @staticmethod
    def _token_counter(tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is not None:  # a copy without the truncation and padding some tokenizer files carry
            from tokenizers import Tokenizer

            fast = Tokenizer.from_str(backend.to_str())
            fast.no_truncation()
            fast.no_padding()
            return lambda text, special=False: len(fast.encode(text, add_special_tokens=special).ids)
        return lambda text, special=False: len(tokenizer(text, add_special_tokens=special,
                                                         truncation=False).input_ids)

    @staticmethod
    def _unknown_spans(tokenizer):
        backend, unk = getattr(tokenizer, "backend_tokenizer", None), getattr(tokenizer, "unk_token_id", None)
        if backend is None or unk is None:  # a vocabulary without an unknown token reads every character
            return lambda text: []
        from tokenizers import Tokenizer

        fast = Tokenizer.from_str(backend.to_str())
        fast.no_truncation()
        fast.no_padding()

        def spans(text: str) -> list[tuple[int, int]]:
            # unknown-token spans, each widened over the characters after it that no token covers (marks a
            # normaliser strips, e.g. Thai vowel signs): those are just as unread
            enc = fast.encode(text, add_special_tokens=False)
            out, offsets = [], enc.offsets
            for j, (i, (a, b)) in enumerate(zip(enc.ids, offsets)):
                if i == unk:
                    end = offsets[j + 1][0] if j + 1 < len(offsets) else len(text)
                    while b < end and not text[b].isspace():
                        b += 1
                    out.append((a, b))
            return out

        return spans

    def unknown_spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans ``(start, end)`` of ``text`` that the embedder reads only as its unknown token.

        Such text (a script outside the vocabulary, rare symbols) adds nothing to the embedding; empty for
        tokenizers without an unknown token.
        """
        return self._spans(text)

    def unknown_chars(self, text: str) -> int:
        """Non-space characters of ``text`` inside :meth:`unknown_spans`."""
        return sum(1 for a, b in self._spans(text) for ch in text[a:b] if not ch.isspace())

    def count_tokens(self, text: str) -> int:
        """The embedder's tokens in ``text``, special tokens not counted."""
        return self._counter(text)

    def fingerprint(self) -> dict:
        """What decides the vectors: the model's name, its dimension and the tokens it reads."""
        return {"name": self.name, "dim": self.dim, "max_seq_length": self.max_seq_length}

    def chunker(self, words: int = 300, overlap: int = 0):
        """A :class:`~tenfold.retrieval.chunking.Chunker` whose chunks this embedder reads whole."""
        from tenfold.retrieval.chunking import Chunker

        return Chunker(words, overlap, self.count_tokens, self.max_tokens,
                       tokenizer_name=f"{self.name} (max_seq_length {self.max_seq_length})")

    def share_embedded(self) -> float:
        """Share of all tokens encoded so far that the model read (1.0 when nothing was cut or nothing encoded).

        Tokens cut at ``max_seq_length`` are not read; neither are texts' unknown tokens (see
        :meth:`unknown_spans`), counted here as one token per unknown span.
        """
        total = self.coverage["tokens"]
        return 1.0 if not total else 1.0 - (self.coverage["tokens_beyond_limit"]
                                            + self.coverage["unknown_tokens"]) / total

    def encode(self, texts: list[str], progress=None) -> np.ndarray:
        """Unit-norm embeddings, (len(texts), dim) float32. Warns (TruncationWarning) with a count when texts are cut.

        ``progress(done, total)``, if given, is called after each batch of ``batch_size`` texts."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        counts = [self._counter(t) for t in texts]
        beyond = [n - self.max_tokens for n in counts if n > self.max_tokens]
        self.coverage["texts"] += len(texts)
        self.coverage["tokens"] += sum(counts)
        self.coverage["tokens_beyond_limit"] += sum(beyond)
        self.coverage["texts_cut"] += len(beyond)
        spans = [self._spans(t) for t in texts]
        unknown = [sum(1 for a, b in sp for ch in t[a:b] if not ch.isspace()) for t, sp in zip(texts, spans)]
        if any(unknown):
            self.coverage["unknown_tokens"] += sum(len(sp) for sp in spans)
            self.coverage["unknown_chars"] += sum(unknown)
            self.coverage["texts_with_unknown"] += sum(1 for n in unknown if n)
            total = sum(1 for t in texts for ch in t if not ch.isspace())
            warnings.warn(f"{sum(1 for n in unknown if n)} of {len(texts)} texts hold characters {self.name} does "
                          f"not know: {sum(unknown)} of their {total} non-space characters are read only as an "
                          f"unknown token; --retriever bm25 reads any script", UnknownTextWarning, stacklevel=2)
        if beyond:
            warnings.warn(f"{len(beyond)} of {len(texts)} texts are longer than the {self.max_seq_length} tokens "
                          f"{self.name} reads: {sum(beyond)} of their {sum(counts)} tokens are not embedded",
                          TruncationWarning, stacklevel=2)
        texts = list(texts)
        step = len(texts) if progress is None else self.batch_size
        parts = []
        for start in range(0, len(texts), step):
            parts.append(np.asarray(self.model.encode(texts[start:start + step], batch_size=self.batch_size,
                                                      normalize_embeddings=True, convert_to_numpy=True,
                                                      show_progress_bar=False), dtype=np.float32))
            if progress is not None:
                progress(min(start + step, len(texts)), len(texts))
        return np.concatenate(parts)
