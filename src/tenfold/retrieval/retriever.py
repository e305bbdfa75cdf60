"""Retrieval over documents' chunks: dense (FAISS), lexical (BM25) or both fused (Xu et al. Sec. 3).

Documents are cut by the embedder's own :class:`~tenfold.retrieval.chunking.Chunker`, so every chunk
is embedded whole; each document's fingerprint (content hash, size, chunker settings, embedder) is
kept with the index, and the same document added twice is added once.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.retrieval import fingerprint as fp
from tenfold.retrieval.embedder import Embedder, TruncationWarning, UnknownTextWarning
from tenfold.retrieval.index import VectorIndex
from tenfold.retrieval.lexical import BM25, reciprocal_rank_fusion

METHODS = ("dense", "bm25", "hybrid")

__all__ = ["METHODS", "Embedder", "Hit", "Retriever", "TruncationWarning", "UnknownTextWarning"]


@dataclass
class Hit:
    index: int  # chunk id in the index
    text: str
    score: float  # dense: cosine; bm25: BM25 score; hybrid: reciprocal-rank-fusion score


class Retriever:
    """Chunks of one or more documents; ``search(query, k)`` returns up to ``k`` :class:`Hit` s, best first.

    ``words``/``overlap``: the chunker's word target and overlap (its token cap is the embedder's limit).
    ``method``: the default for :meth:`search`: ``dense`` (cosine over FAISS), ``bm25`` or ``hybrid``
    (reciprocal-rank fusion of the two). ``kind``: the FAISS index kind (flat, hnsw, ivf).
    ``sources``: one fingerprint per document added (see :mod:`tenfold.retrieval.fingerprint`).
    """

    def __init__(self, embedder: Embedder | None = None, kind: str = "flat", words: int = 300, overlap: int = 0,
                 method: str = "dense", device=None):
        if method not in METHODS:
            raise TenfoldError(f"unknown retriever {method!r}; choose one of: {', '.join(METHODS)}")
        self.embedder = embedder or Embedder(device=device)  # device: where a default embedder runs
        self.kind, self.method = kind, method
        self.chunker = self.embedder.chunker(words, overlap)
        self.clear()

    def clear(self) -> None:
        """Forget every chunk and source."""
        self.index = VectorIndex(self.embedder.dim, self.kind)
        self.bm25 = BM25()
        self.sources: list[dict] = []

    def __len__(self) -> int:
        return len(self.index)

    def add_texts(self, texts: list[str], meta: list[dict] | None = None, progress=None) -> None:
        """Add texts as they are (one chunk each); texts longer than the embedder reads raise a TruncationWarning.
        ``progress(done, total)``: called as the texts are embedded (see :meth:`Embedder.encode`)."""
        self.index.add(self.embedder.encode(texts, progress=progress), texts, meta)
        self.bm25.add(texts)

    def add_document(self, text: str, words: int | None = None, overlap: int | None = None, source: str = "",
                     progress=None) -> int:
        """Chunk, embed and add ``text``; returns the chunks added (0 when this content is already in the index).

        ``words``/``overlap`` override the retriever's chunker for this document. Raises TenfoldError when
        the text is blank. ``progress(done, total)``: called as the chunks are embedded.
        """
        if not text.strip():
            raise TenfoldError(f"{source or 'the document'} is empty")
        if fp.find(self.sources, text) is not None:
            return 0
        chunker = self.chunker
        if (words, overlap) != (None, None):
            chunker = self.embedder.chunker(self.chunker.words if words is None else words,
                                            self.chunker.overlap if overlap is None else overlap)
        chunks = chunker.split(text)
        first = len(self)
        self.add_texts([c.text for c in chunks],
                       [{"source": source, "start_char": c.start, "tokens": c.tokens} for c in chunks], progress)
        record = fp.fingerprint(text, source, chunker.settings(), self.embedder.fingerprint())
        record.update(first_chunk=first, chunks=len(chunks), **coverage(text, chunks, chunker.max_tokens,
                                                                       self.embedder.unknown_spans))
        self.sources.append(record)
        return len(chunks)

    def check_document(self, text: str, name: str, index_name: str = "the index") -> dict:
        """The fingerprint of ``text`` in this index; TenfoldError when the index was not built from it."""
        return fp.check_document(self.sources, text, name, index_name)

    def search(self, query: str, k: int = 5, method: str | None = None) -> list[Hit]:
        """Up to ``k`` chunks for ``query``, best first, by ``method`` (default: the retriever's)."""
        method = method or self.method
        if method not in METHODS:
            raise TenfoldError(f"unknown retriever {method!r}; choose one of: {', '.join(METHODS)}")
        if not query.strip():
            raise TenfoldError("the query is empty")
        if k < 1:
            raise TenfoldError(f"k must be >= 1 (got {k})")
        if method == "dense":
            rows = self.index.search(self.embedder.encode([query]), k)[0]
        elif method == "bm25":
            rows = self.bm25.search(query, k)
        else:
            pool = max(4 * k, 20)
            dense = [i for i, _ in self.index.search(self.embedder.encode([query]), pool)[0]]
            lexical = [i for i, _ in self.bm25.search(query, pool)]
            rows = reciprocal_rank_fusion([dense, lexical], k)
        return [Hit(i, self.index.texts[i], s) for i, s in rows]

    def save(self, directory: str | Path) -> Path:
        """Write ``index.faiss`` and ``chunks.json`` (texts, fingerprints) into ``directory``, each atomically."""
        return self.index.save(directory, {"format": 2, "embedder": self.embedder.fingerprint(),
                                           "chunker": self.chunker.settings(), "sources": self.sources})

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None, method: str = "dense",
             device=None) -> "Retriever":
        """An index written by :meth:`save` (or by an older tenfold, which recorded no sources).

        The embedder is rebuilt from the index's fingerprint (name, max_seq_length) unless given; raises
        TenfoldError when its dimension differs from the index's. ``device``: where that rebuilt embedder runs.
        """
        index, info = VectorIndex.load(directory)
        saved = info.get("embedder")
        if isinstance(saved, str) or saved is None:  # format 1: the name only, read at the model's default
            saved = {"name": saved or "all-minilm-l6-v2"}
        if embedder is None:
            embedder = Embedder(saved.get("name"), max_seq_length=saved.get("max_seq_length"), device=device)
        if embedder.dim != index.dim:
            raise TenfoldError(f"the index has dimension {index.dim} but the embedder gives {embedder.dim}")
        chunker = info.get("chunker") or {}
        self = cls(embedder, index.kind, words=chunker.get("words", 300), overlap=chunker.get("overlap", 0),
                   method=method)
        self.index = index
        self.bm25 = BM25(index.texts)
        self.sources = list(info.get("sources") or [])
        return self


def coverage(text: str, chunks, max_tokens: int | None, unknown_spans=None) -> dict:
    """How much of ``text`` the embedder reads through its chunks (each chunk's ``start`` is a character offset).

    ``share_embedded`` = non-space characters of ``text`` inside chunks within ``max_tokens``, and not
    inside a chunk's ``unknown_spans(chunk_text)`` (characters the embedder reads only as its unknown
    token), / all its non-space characters; 1.0 means every word is read by the embedder.
    ``unknown_chars`` counts the non-space characters lost to the unknown token.
    """
    seen = bytearray(len(text))
    over = 0
    for c in chunks:
        if max_tokens is not None and c.tokens > max_tokens:
            over += 1
            continue
        seen[c.start : c.start + len(c.text)] = b"\x01" * len(c.text)
        for a, b in unknown_spans(c.text) if unknown_spans else ():
            seen[c.start + a : c.start + b] = b"\x02" * (b - a)
    total = sum(1 for ch in text if not ch.isspace())
    read = sum(1 for ch, s in zip(text, seen) if s == 1 and not ch.isspace())
    unknown = sum(1 for ch, s in zip(text, seen) if s == 2 and not ch.isspace())
    return {"nonspace_chars": total, "share_embedded": 1.0 if not total else read / total, "chunks_over_limit": over,
            "unknown_chars": unknown}
