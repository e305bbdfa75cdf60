"""Pause-pretraining and pause-finetuning loops on ``accelerate`` (Goyal et al. 2023, Sec. 3.1-3.2).

Both stages draw batches that depend only on (seed, step) - random windows of the corpus or random
prompt/answer pairs - through the collators of :mod:`tenfold.pause.collators`, and train with the shared
resumable loop :func:`tenfold.models.finetune.fit` (AdamW, warmup and cosine decay, ``accelerate``
checkpoints). CPU by default; ``accelerate launch`` runs the same code on several GPUs.

``pause_rate > 0`` is pause-pretraining (PausePT; 0 is standard pretraining, StdPT); ``m_ft > 0`` is
pause-finetuning (PauseFT; 0 is StdFT). The pause token is added with :func:`add_pause_token` before training
whenever a stage uses it, so a StdPT model meets ``<pause>`` for the first time in PauseFT, as in the paper.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.models.finetune import check_run_dir, fit, is_main_process, load_checkpoint, save_checkpoint, write_json
from tenfold.pause.collators import PauseFinetuneCollator, PausePretrainCollator
from tenfold.pause.sizes import SIZES
from tenfold.pause.tokens import add_pause_token



def small_llama(vocab_size: int, size: str = "tiny", max_positions: int = 512, seed: int = 0):
    """A randomly initialised ``LlamaForCausalLM`` of a few million parameters (tied embeddings)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    if size not in SIZES:
        raise TenfoldError(f"unknown model size {size!r}; known: {', '.join(SIZES)}")
    torch.manual_seed(seed)
    spec = SIZES[size]
    cfg = LlamaConfig(vocab_size=vocab_size, max_position_embeddings=max_positions, tie_word_embeddings=True,
                      num_key_value_heads=spec["num_attention_heads"], **spec)
    return LlamaForCausalLM(cfg)


@dataclass
class TrainConfig:
    """Settings of one stage. ``pause_rate`` is used by pretraining, ``m_ft`` by fine-tuning."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3
    warmup: float = 0.05
    weight_decay: float = 0.1
    seq_len: int = 64
    pause_rate: float = 0.0
    m_ft: int = 0
    seed: int = 0
    checkpoint_every: int = 0
    clip: float = 1.0

    def check(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.seq_len < 2:
            raise TenfoldError("steps, batch size and sequence length must be positive (seq_len >= 2)")
        if not 0 <= self.pause_rate < 1:
            raise TenfoldError(f"the pause rate must be in [0, 1) (got {self.pause_rate})")
        if not isinstance(self.m_ft, int) or self.m_ft < 0:
            raise TenfoldError(f"m_ft must be an integer >= 0 (got {self.m_ft!r})")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise TenfoldError(f"the learning rate must be a positive number (got {self.lr})")


def token_stream(tokenizer, text: str) -> np.ndarray:
    """The corpus as one array of token ids, lines separated by the end token."""
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if not lines:
        raise TenfoldError("the pretraining text is empty")
    eos = tokenizer.eos_token_id
    out = []
    for ids in tokenizer(lines, add_special_tokens=False)["input_ids"]:
        out.extend(ids)
        out.append(eos)
    return np.asarray(out, dtype=np.int64)


def encode_pairs(tokenizer, pairs: list[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
    if not pairs:
        raise TenfoldError("no fine-tuning examples")
    prompts = tokenizer([p for p, _ in pairs], add_special_tokens=False)["input_ids"]
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False)["input_ids"]
    return list(zip(prompts, answers))


def _pretrain_batch(stream: np.ndarray, cfg: TrainConfig, step: int, pause: int | None, pad: int) -> dict:
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(stream) - cfg.seq_len, cfg.batch_size)
    rows = [stream[s:s + cfg.seq_len].tolist() for s in starts]
    collate = PausePretrainCollator(pause if pause is not None else -1, pad, cfg.pause_rate, seed=[cfg.seed, step, 1])
    return collate(rows)


def _finetune_batch(pairs: list, cfg: TrainConfig, step: int, pause: int | None, pad: int, eos: int) -> dict:
    rng = np.random.default_rng([cfg.seed, step])
    chosen = [pairs[i] for i in rng.integers(0, len(pairs), cfg.batch_size)]
    return PauseFinetuneCollator(pause if pause is not None else -1, pad, cfg.m_ft, end=eos)(chosen)


def train(model, tokenizer, cfg: TrainConfig, *, stream: np.ndarray | None = None, pairs: list | None = None,
          run_dir: str | Path | None = None, resume: bool = False, progress=None, stop_after: int | None = None) -> dict:
    """Pretrain on ``stream`` (token ids) or fine-tune on ``pairs`` (encoded prompt/answer); return the history.

    ``model`` is trained in place. With ``run_dir``, checkpoints go to ``run_dir/checkpoint`` and the finished
    model and tokenizer to ``run_dir/model``. ``stop_after``: stop with a checkpoint after that step
    (:class:`~tenfold.models.finetune.TrainingStopped`).
    """
    cfg.check()
    if (stream is None) == (pairs is None):
        raise TenfoldError("give either a token stream (pretraining) or prompt/answer pairs (fine-tuning)")
    check_run_dir(run_dir, resume)
    uses_pause = cfg.pause_rate > 0 if stream is not None else cfg.m_ft > 0
    pause = add_pause_token(model, tokenizer) if uses_pause else None
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or eos is None:
        raise TenfoldError("the tokenizer needs a pad and an end-of-sequence token")
    if stream is not None:
        if len(stream) <= cfg.seq_len:
            raise TenfoldError(f"the corpus ({len(stream)} tokens) is shorter than one sequence ({cfg.seq_len})")
        batch_for_step = lambda step: _pretrain_batch(stream, cfg, step, pause, pad)  # noqa: E731
    else:
        batch_for_step = lambda step: _finetune_batch(pairs, cfg, step, pause, pad, eos)  # noqa: E731
    losses = fit(model, batch_for_step, steps=cfg.steps, lr=cfg.lr, warmup=cfg.warmup, weight_decay=cfg.weight_decay,
                 clip=cfg.clip, seed=cfg.seed, run_dir=run_dir, resume=resume, checkpoint_every=cfg.checkpoint_every,
                 progress=progress, tokenizer=tokenizer, stop_after=stop_after)
    history = {"config": asdict(cfg), "losses": losses, "pause_id": pause,
               "parameters": sum(p.numel() for p in model.parameters())}
    if run_dir is not None and is_main_process():  # under `accelerate launch`, one process writes
        write_json(Path(run_dir) / "history.json", history)
    return history


__all__ = ["SIZES", "TrainConfig", "small_llama", "token_stream", "encode_pairs", "train", "check_run_dir",
           "save_checkpoint", "load_checkpoint"]
