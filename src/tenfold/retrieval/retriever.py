"""Dense retrieval over a document's chunks: embed with a sentence-transformers model, search a FAISS index."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.retrieval.chunking import chunk
from tenfold.retrieval.index import VectorIndex


class Embedder:
    """Normalised sentence embeddings (the bundled all-MiniLM-L6-v2 by default, or any sentence-transformers model)."""

    def __init__(self, model=None, batch_size: int = 64):
        from tenfold.models import DEFAULT_EMBEDDER, load_embedder

        if model is None or isinstance(model, str):
            self.name = model or DEFAULT_EMBEDDER
            model = load_embedder(model)
        else:
            self.name = getattr(model, "model_card_data", None) and getattr(model.model_card_data, "base_model", None) or "custom"
        self.model, self.batch_size = model, batch_size
        dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self.model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)


@dataclass
class Hit:
    index: int
    text: str
    score: float


class Retriever:
    """Chunks of one or more documents in a :class:`VectorIndex`; ``search(query, k)`` returns :class:`Hit` s."""

    def __init__(self, embedder: Embedder | None = None, kind: str = "flat"):
        self.embedder = embedder or Embedder()
        self.index = VectorIndex(self.embedder.dim, kind)

    def add_texts(self, texts: list[str], meta: list[dict] | None = None) -> None:
        self.index.add(self.embedder.encode(texts), texts, meta)

    def add_document(self, text: str, words: int = 300, overlap: int = 0, source: str = "") -> int:
        chunks = chunk(text, words, overlap)
        if not chunks:
            raise TenfoldError(f"{source or 'the document'} is empty")
        self.add_texts([c.text for c in chunks], [{"source": source, "start_word": c.start_word} for c in chunks])
        return len(chunks)

    def search(self, query: str, k: int = 5) -> list[Hit]:
        if not query.strip():
            raise TenfoldError("the query is empty")
        rows = self.index.search(self.embedder.encode([query]), k)[0]
        return [Hit(i, self.index.texts[i], s) for i, s in rows]

    def save(self, directory: str | Path) -> Path:
        return self.index.save(directory, {"embedder": self.embedder.name})

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> "Retriever":
        index, info = VectorIndex.load(directory)
        embedder = embedder or Embedder(None if info.get("embedder") in (None, "all-minilm-l6-v2") else info["embedder"])
        if embedder.dim != index.dim:
            raise TenfoldError(f"the index has dimension {index.dim} but the embedder gives {embedder.dim}")
        self = cls.__new__(cls)
        self.embedder, self.index = embedder, index
        return self
