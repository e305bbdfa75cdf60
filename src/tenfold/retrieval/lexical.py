"""Lexical retrieval (BM25, via ``bm25s``) and reciprocal-rank fusion with dense scores.

Dense embeddings blur exact strings: a rare name, a code or a number that the embedder splits into
common word pieces. BM25 (Robertson & Zaragoza 2009) scores exact term overlap, weighted by how
rare each term is. Hybrid retrieval fuses the two rankings by reciprocal rank (Cormack et al. 2009):
``score(d) = sum over rankings of 1 / (60 + rank(d))``, which needs no score calibration.

Terms: lower-cased runs of letters and digits; in scripts written without spaces (Chinese, Japanese,
Thai, ...) each character and each pair of neighbouring characters is a term. English stopwords
are dropped.
"""
from __future__ import annotations

import re

from tenfold.retrieval.chunking import UNSPACED

RRF_K = 60
_TERM = re.compile(f"[{UNSPACED}]+|[^\\W_{UNSPACED}]+")
_UNSPACED = re.compile(f"[{UNSPACED}]")


def terms(text: str) -> list[str]:
    """BM25 terms of ``text`` (see the module docstring)."""
    from bm25s.stopwords import STOPWORDS_EN

    out = []
    for run in _TERM.findall(text.lower()):
        if _UNSPACED.match(run):
            out.extend(run)
            out.extend(run[i : i + 2] for i in range(len(run) - 1))
        elif run not in STOPWORDS_EN:
            out.append(run)
    return out


class BM25:
    """A BM25 index over texts; ``search(query, k)`` -> [(text id, score)] with score > 0, best first."""

    def __init__(self, texts: list[str] | None = None):
        self.texts: list[str] = []
        self._index = None
        if texts:
            self.add(texts)

    def add(self, texts: list[str]) -> None:
        self.texts.extend(texts)
        self._index = None  # rebuilt on the next search (bm25s indexes a whole corpus at once)

    def __len__(self) -> int:
        return len(self.texts)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        import bm25s

        q = terms(query)
        if not self.texts or not q:
            return []
        if self._index is None:
            self._index = bm25s.BM25()
            self._index.index([terms(t) or [""] for t in self.texts], show_progress=False)
        ids, scores = self._index.retrieve([q], k=min(k, len(self.texts)), show_progress=False, n_threads=1)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if s > 0]


def reciprocal_rank_fusion(rankings: list[list[int]], k: int, rrf_k: int = RRF_K) -> list[tuple[int, float]]:
    """Fuse rankings (lists of ids, best first) into the top ``k`` (id, fused score), best first."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, i in enumerate(ranking, start=1):
            fused[i] = fused.get(i, 0.0) + 1.0 / (rrf_k + rank)
    order = sorted(fused.items(), key=lambda item: (-item[1], item[0]))
    return [(i, float(s)) for i, s in order[:k]]
