"""A FAISS vector index of chunks with their texts, saved to and loaded from a directory.

``kind="flat"``: exact inner product (cosine on normalised embeddings), the default.
``kind="hnsw"``: an approximate HNSW graph (no training; sub-linear search) for corpora of
millions of chunks. ``kind="ivf"``: an inverted-file index (k-means cells, trained on the vectors
themselves; ``nprobe`` cells searched), the usual choice when memory matters.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError

KINDS = ("flat", "hnsw", "ivf")


class VectorIndex:
    def __init__(self, dim: int, kind: str = "flat", hnsw_m: int = 32, nprobe: int = 8):
        import faiss

        if kind not in KINDS:
            raise TenfoldError(f"unknown index kind {kind!r}; choose one of: {', '.join(KINDS)}")
        self.dim, self.kind, self.nprobe, self.hnsw_m = dim, kind, nprobe, hnsw_m
        if kind == "flat":
            self.index = faiss.IndexFlatIP(dim)
        elif kind == "hnsw":
            self.index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efSearch = 64
        else:
            self.index = None  # built on the first add(): the cell count depends on the corpus size
        self.texts: list[str] = []
        self.meta: list[dict] = []

    def __len__(self) -> int:
        return len(self.texts)

    def add(self, vectors: np.ndarray, texts: list[str], meta: list[dict] | None = None) -> None:
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(vectors) != len(texts):
            raise TenfoldError(f"expected {len(texts)} vectors of dimension {self.dim}, got {vectors.shape}")
        if not np.isfinite(vectors).all():
            raise TenfoldError("embeddings contain NaN or infinity")
        if self.kind == "ivf" and self.index is None:
            cells = max(1, min(int(4 * math.sqrt(len(vectors))), len(vectors) // 39 or 1))
            self.index = faiss.IndexIVFFlat(faiss.IndexFlatIP(self.dim), self.dim, cells, faiss.METRIC_INNER_PRODUCT)
            self.index.train(vectors)
            self.index.nprobe = min(self.nprobe, cells)
        self.index.add(vectors)
        self.texts.extend(texts)
        self.meta.extend(meta or [{} for _ in texts])

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """For each query vector, up to ``k`` (chunk id, score) pairs, best first."""
        if k < 1:
            raise TenfoldError(f"k must be >= 1 (got {k})")
        if not len(self):
            return [[] for _ in range(len(queries))]
        scores, ids = self.index.search(np.ascontiguousarray(queries, dtype=np.float32), min(k, len(self)))
        return [[(int(i), float(s)) for i, s in zip(row_i, row_s) if i >= 0] for row_i, row_s in zip(ids, scores)]

    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        import faiss

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / f".index.faiss.{os.getpid()}"
        faiss.write_index(self.index, str(tmp))
        info = {"dim": self.dim, "kind": self.kind, "nprobe": self.nprobe, "hnsw_m": self.hnsw_m, "count": len(self),
                **(extra or {})}
        body = json.dumps({"info": info, "texts": self.texts, "meta": self.meta}, ensure_ascii=False)
        tmp_json = out / f".chunks.json.{os.getpid()}"
        tmp_json.write_text(body, encoding="utf-8")
        # both files are complete before either is replaced; load() checks that their counts agree
        tmp.replace(out / "index.faiss")
        tmp_json.replace(out / "chunks.json")
        return out

    @classmethod
    def load(cls, directory: str | Path) -> tuple["VectorIndex", dict]:
        import faiss

        path = Path(directory)
        if not (path / "index.faiss").is_file() or not (path / "chunks.json").is_file():
            raise TenfoldError(f"{path} is not a tenfold index (expected index.faiss and chunks.json)")
        try:
            data = json.loads((path / "chunks.json").read_text(encoding="utf-8"))
            info = data["info"]
            index = cls(int(info["dim"]), info["kind"], hnsw_m=int(info.get("hnsw_m", 32)),
                        nprobe=int(info.get("nprobe", 8)))
            index.index = faiss.read_index(str(path / "index.faiss"))
            index.texts, index.meta = list(data["texts"]), list(data["meta"])
        except (KeyError, ValueError, TypeError, RuntimeError) as exc:
            raise TenfoldError(f"{path}: damaged index ({exc})") from None
        if index.index.ntotal != len(index.texts):
            raise TenfoldError(f"{path}: the index holds {index.index.ntotal} vectors but {len(index.texts)} texts")
        if index.kind == "ivf":
            index.index.nprobe = index.nprobe
        return index, info
