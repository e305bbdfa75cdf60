"""RA-DIT's dual-encoder retriever and LM-supervised retrieval (Lin et al. 2023, Sec. 2.3, R-ft).

The document encoder and the FAISS index stay frozen; a separate query encoder, initialised from the same
MiniLM (sentence-transformers), is the only trainable part. LM-supervised retrieval (LSR, Shi et al. 2023):
for a training question x with answer y and top-k chunks c, the target is

    p_LSR(c | x, y) = softmax_c( log p_LM(y | c, x) / tau )

and the retriever's p_R(c | x) = softmax_c( s(x, c) / tau_R ) over the same chunks is trained to minimise
KL(p_R || p_LSR). Targets are precomputed once (the LM is fixed while the retriever trains).
"""
from __future__ import annotations

import copy
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.radit.reader import tempered_softmax
from tenfold.retrieval import Embedder, VectorIndex


class DualEncoder:
    """A frozen passage index plus a trainable query encoder; ``search(questions, k)`` -> [(passage, score)]."""

    def __init__(self, passages: list[str], embedder: Embedder | None = None, cache_dir: str | Path | None = None):
        if not passages:
            raise TenfoldError("the retrieval corpus is empty")
        self.embedder = embedder or Embedder()
        self.passages = passages
        vectors = self._passage_vectors(cache_dir)
        self.index = VectorIndex(self.embedder.dim)
        self.index.add(vectors, passages)
        self.vectors = vectors
        self.query_model = copy.deepcopy(self.embedder.model)  # initialised from the document encoder
        self.query_model.eval()

    def _passage_vectors(self, cache_dir) -> np.ndarray:
        reads = self.embedder.fingerprint()  # name, dim and max_seq_length all decide the vectors
        key = hashlib.sha1(("\n".join(self.passages) + json.dumps(reads, sort_keys=True)).encode()).hexdigest()[:16]
        path = Path(cache_dir) / f"passages-{key}.npy" if cache_dir else None
        if path is not None and path.exists():
            return np.load(path)
        vectors = self.embedder.encode(self.passages)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")  # processes of one `accelerate launch` write at once
            np.save(tmp, vectors)
            tmp.replace(path)
        return vectors

    def encode_queries(self, questions: list[str]) -> np.ndarray:
        return np.asarray(self.query_model.encode(list(questions), normalize_embeddings=True, convert_to_numpy=True,
                                                  show_progress_bar=False, batch_size=64), dtype=np.float32)

    def query_embeddings(self, questions: list[str]) -> torch.Tensor:
        """Normalised query embeddings with gradients (sentence-transformers' forward on tokenized features)."""
        # sentence-transformers 5.x renamed tokenize (now deprecated, with a warning) to preprocess
        tokenize = getattr(self.query_model, "preprocess", None) or self.query_model.tokenize
        device = self.query_model.device
        features = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in tokenize(list(questions)).items()}
        emb = self.query_model(features)["sentence_embedding"]
        return torch.nn.functional.normalize(emb, dim=-1)

    def search(self, questions: list[str], k: int) -> list[list[tuple[int, float]]]:
        if k < 1:
            raise TenfoldError(f"k must be at least 1 (got {k})")
        if any(not q.strip() for q in questions):
            raise TenfoldError("a question is empty")
        return self.index.search(self.encode_queries(questions), k)

    def save_query_encoder(self, path: str | Path) -> Path:
        path = Path(path)
        self.query_model.save(str(path))
        return path

    def load_query_encoder(self, path: str | Path, device=None) -> None:
        """Load a saved query encoder onto ``device`` (default: where the document encoder runs)."""
        from sentence_transformers import SentenceTransformer

        from tenfold.devices import resolve_device

        if not (Path(path) / "config.json").exists() and not (Path(path) / "modules.json").exists():
            raise TenfoldError(f"no saved query encoder in {path}")
        device = resolve_device(device if device is not None else self.embedder.model.device)
        self.query_model = SentenceTransformer(str(path), device=str(device)).eval()


def lsr_distribution(loglik, tau: float = 1.0) -> np.ndarray:
    """p_LSR over each row's chunks: softmax(log p_LM(y | c, x) / tau) (rows sum to one)."""
    return tempered_softmax(loglik, tau)


def retriever_kl(scores: torch.Tensor, target: torch.Tensor, tau_r: float = 0.05) -> torch.Tensor:
    """Mean KL(p_R || p_LSR) with p_R = softmax(scores / tau_R); ``target`` rows are distributions."""
    log_pr = torch.log_softmax(scores / tau_r, dim=-1)
    log_t = torch.log(target.clamp_min(1e-12))
    return (log_pr.exp() * (log_pr - log_t)).sum(-1).mean()


def train_query_encoder(retriever: DualEncoder, questions: list[str], candidates: np.ndarray, targets: np.ndarray,
                        steps: int = 100, batch_size: int = 16, lr: float = 2e-5, tau_r: float = 0.05, seed: int = 0,
                        progress=None, run_dir=None, resume: bool = False, checkpoint_every: int = 0) -> list[float]:
    """R-ft: fit the query encoder to the LSR targets over fixed candidate chunks (document side frozen).

    ``candidates``: (questions, k) chunk ids; ``targets``: (questions, k) p_LSR rows. Each step draws
    ``batch_size`` questions; under ``accelerate launch`` each process encodes its rows of them. Runs on the shared
    loop (:func:`tenfold.models.finetune.train_steps`): with ``run_dir`` it checkpoints every ``checkpoint_every``
    steps and ``resume`` continues exactly (the question sampler's state is checkpointed). Returns the loss (mean KL)
    of every step. Raises TenfoldError for inputs of different lengths or none.
    """
    from tenfold.models.finetune import Forward, GeneratorState, my_rows, train_steps

    if len(questions) != len(candidates) or len(candidates) != len(targets) or not questions:
        raise TenfoldError("questions, candidates and LSR targets must be non-empty and of one length")
    model = retriever.query_model
    torch.manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    docs = torch.from_numpy(retriever.vectors)
    candidates, targets = np.asarray(candidates), np.asarray(targets)

    def batch_for_step(step: int):
        rows = rng.integers(0, len(questions), batch_size)  # the global batch: every process draws the same rows
        mine, share = my_rows(len(rows))
        rows = rows[mine]
        return ([questions[i] for i in rows], docs[torch.from_numpy(candidates[rows])],  # (B, k, dim), frozen
                torch.from_numpy(targets[rows]).float(), share)

    def loss_of(encoder, batch) -> torch.Tensor:
        texts, d, target, share = batch
        return retriever_kl(torch.einsum("bd,bkd->bk", encoder(texts), d), target, tau_r) * share

    return train_steps(Forward(retriever.query_embeddings, model), optimizer, batch_for_step, loss_of, steps=steps,
                       run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       generators=[GeneratorState(rng)])


def recall_at_k(hits: list[list[tuple[int, float]]], gold: list[int], k: int) -> float:
    if not hits:
        raise TenfoldError("no retrieval results")
    return float(np.mean([g in [i for i, _ in h[:k]] for h, g in zip(hits, gold)]))
