"""Splitting long text into retrieval chunks (Xu et al., "Retrieval meets Long Context LLMs", Sec. 3: 300-word chunks)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    index: int
    text: str
    start_word: int  # position of the chunk's first word in the document


def chunk(text: str, words: int = 300, overlap: int = 0) -> list[Chunk]:
    """Consecutive chunks of ``words`` whitespace-separated words, each sharing ``overlap`` words with the last.

    Empty or blank text gives no chunks; text shorter than one chunk gives one. Words are split on
    any Unicode whitespace and re-joined with single spaces.
    """
    if not isinstance(words, int) or words < 1:
        raise ValueError(f"words must be a positive integer, got {words!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < words:
        raise ValueError(f"overlap must be between 0 and words - 1 ({words - 1}), got {overlap!r}")
    tokens = text.split()
    step = words - overlap
    out = []
    for start in range(0, len(tokens), step):
        out.append(Chunk(len(out), " ".join(tokens[start : start + words]), start))
        if start + words >= len(tokens):
            break
    return out
