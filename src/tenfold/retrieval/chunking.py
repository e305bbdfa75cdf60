"""Splitting long text into retrieval chunks the embedder reads whole (Xu et al., "Retrieval meets Long Context LLMs", Sec. 3).

The paper cuts documents into 300-word chunks. A chunk only helps retrieval if the embedder sees
all of it, and all-MiniLM-L6-v2 stops after ``max_seq_length`` word pieces: 300 English words are
335-378 of them, so a plain 300-word chunk loses its end. Here the paper's 300 words is a *target*
capped by three limits, all checked on every chunk:

- ``max_tokens``: the embedder's own tokens (its tokenizer, without the special tokens it adds);
- ``words``: the word target; a word is a run of non-space characters, and each character of a
  script written without spaces (Chinese, Japanese kana, Thai, Lao, Khmer, Myanmar) counts as one;
- ``max_chars``: a guard for runs the tokenizer folds into one unknown token (a 50,000-character
  line with no whitespace is one ``[UNK]`` to a WordPiece tokenizer).

Boundaries come from ``semantic-text-splitter`` (Unicode sentence, word and grapheme boundaries,
runs of newlines for paragraphs): each chunk is the largest run of whole paragraphs, else sentences,
else words, else characters, that fits. Chunks are trimmed of surrounding whitespace; every
non-space character of the input is in some chunk.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from tenfold.errors import TenfoldError

# Scripts written without spaces between words: each character counts as a word.
UNSPACED = ("\u0e00-\u0eff"  # Thai, Lao
            "\u1000-\u109f"  # Myanmar
            "\u1780-\u17ff"  # Khmer
            "\u3040-\u30ff"  # Hiragana, Katakana
            "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # CJK ideographs
            "\U00020000-\U0002fa1f")
_WORD = re.compile(f"[{UNSPACED}]|[^\\s{UNSPACED}]+")


def count_words(text: str) -> int:
    """Words in ``text``: runs of non-space characters, each unspaced-script character counting as one."""
    return len(_WORD.findall(text))


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start: int  # character offset of the chunk's first character in the document
    tokens: int = 0  # the embedder's tokens (without special tokens); 0 when no tokenizer was given
    words: int = 0


class Chunker:
    """Split text into chunks of at most ``words`` words, ``max_tokens`` tokens and ``max_chars`` characters.

    ``count_tokens``: a callable text -> number of the embedder's tokens (without special tokens), e.g.
    :meth:`tenfold.retrieval.retriever.Embedder.count_tokens`; None checks words and characters only.
    ``max_tokens``: the embedder's limit minus its special tokens (required with ``count_tokens``).
    ``overlap``: words (and proportionally tokens) that consecutive chunks may share; 0 <= overlap < words.
    ``max_chars``: default ``10 * words``.
    Raises TenfoldError for limits below 1 or an overlap outside [0, words).
    """

    def __init__(self, words: int = 300, overlap: int = 0, count_tokens=None, max_tokens: int | None = None,
                 max_chars: int | None = None, tokenizer_name: str = ""):
        if not isinstance(words, int) or isinstance(words, bool) or words < 1:
            raise TenfoldError(f"words must be a positive integer, got {words!r}")
        if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < words:
            raise TenfoldError(f"overlap must be between 0 and words - 1 ({words - 1}), got {overlap!r}")
        if count_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise TenfoldError(f"max_tokens must be a positive integer with a token counter, got {max_tokens!r}")
        max_chars = 10 * words if max_chars is None else max_chars
        if not isinstance(max_chars, int) or max_chars < 1:
            raise TenfoldError(f"max_chars must be a positive integer, got {max_chars!r}")
        self.words, self.overlap, self.max_chars = words, overlap, max_chars
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens if count_tokens is not None else None
        self.tokenizer_name = tokenizer_name if count_tokens is not None else ""
        self._splitter = None

    def settings(self) -> dict:
        """The settings that decide the chunks (kept in index fingerprints and experiment reports)."""
        return {"splitter": "semantic-text-splitter", "words": self.words, "overlap": self.overlap,
                "max_tokens": self.max_tokens, "max_chars": self.max_chars, "tokenizer": self.tokenizer_name}

    def _size(self, text: str) -> int:
        # All three limits on one scale whose capacity is ``cap``: ceil(n * cap / limit) <= cap iff n <= limit.
        # (semantic-text-splitter misbehaves on measures far larger than the text: keep the scale small.)
        cap = self._cap
        size = max(-(-count_words(text) * cap // self.words), -(-len(text) * cap // self.max_chars))
        if self.max_tokens is not None:
            size = max(size, -(-self.count_tokens(text) * cap // self.max_tokens))
        return size

    @property
    def _cap(self) -> int:
        return self.max_tokens or self.words

    def split(self, text: str) -> list[Chunk]:
        """Chunks of ``text`` in order (empty or blank text: none). Each is within all three limits."""
        from semantic_text_splitter import TextSplitter

        if not text.strip():
            return []
        if self._splitter is None:
            overlap = -(-self.overlap * self._cap // self.words)
            self._splitter = TextSplitter.from_callback(self._size, self._cap, overlap=overlap, trim=True)
        out = []
        for start, piece in self._splitter.chunk_indices(text):
            if not piece.strip():
                continue
            tokens = self.count_tokens(piece) if self.max_tokens is not None else 0
            out.append(Chunk(len(out), piece, start, tokens, count_words(piece)))
        return out


def chunk(text: str, words: int = 300, overlap: int = 0) -> list[Chunk]:
    """Chunks of at most ``words`` words (no token limit: see :class:`Chunker` for the embedder-aware one).

    Empty or blank text gives no chunks. Raises TenfoldError for ``words < 1`` or an overlap outside [0, words).
    """
    return Chunker(words, overlap).split(text)
