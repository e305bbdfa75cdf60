"""The embedding model behind ``POST /v1/embeddings``: a sentence-transformers model (the bundled all-MiniLM-L6-v2
by default, ``tenfold serve --embedding-model``), run one request at a time in a worker thread."""
from __future__ import annotations

import base64
import threading

import numpy as np

from tenfold.serve.errors import APIError


class EmbeddingService:
    """``embedder``: a :class:`~tenfold.retrieval.embedder.Embedder`; ``name``: the model id clients send."""

    def __init__(self, embedder, name: str):
        self.embedder, self.name = embedder, name
        self._lock = threading.Lock()

    def card(self, created: int) -> dict:
        return {"id": self.name, "object": "model", "created": created, "owned_by": "tenfold"}

    def check(self, texts: list[str]) -> list[int]:
        """Each text's token count; APIError 400 for a text longer than the model reads (its end would be dropped
        from the embedding without a word)."""
        counts = [self.embedder.count_tokens(t) for t in texts]
        for i, n in enumerate(counts):
            if n > self.embedder.max_tokens:
                raise APIError(400, f"input {i} is {n} tokens; {self.name} reads at most {self.embedder.max_tokens}",
                               param="input", code="context_length_exceeded")
        return counts

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """(len(texts), dim) float32 unit vectors and the tokens read. Blocking: call it in a worker thread."""
        counts = self.check(texts)
        with self._lock:
            vectors = self.embedder.model.encode(texts, batch_size=self.embedder.batch_size, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False)
        return np.asarray(vectors, dtype=np.float32), sum(counts) + len(texts) * self.embedder.special_tokens


def encode_vector(vector: np.ndarray, encoding_format: str):
    """A list of floats, or ``base64``: the float32 little-endian bytes, base64-encoded (what the openai SDK
    decodes)."""
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode()
    return vector.astype(float).tolist()
