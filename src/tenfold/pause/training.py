"""Pause-pretraining and pause-finetuning loops on ``accelerate`` (Goyal et al. 2023, Sec. 3.1-3.2).

One loop serves both stages: a batch sampler that depends only on (seed, step) - so an interrupted run
resumes bit-for-bit and each ``accelerate launch`` process takes its own rows of the same global batch - the
collators of :mod:`tenfold.pause.collators`, AdamW with warmup and cosine decay, and checkpoints written with
``Accelerator.save_state`` every ``checkpoint_every`` steps. CPU by default; ``accelerate launch`` runs the
same code on several GPUs.

``pause_rate > 0`` is pause-pretraining (PausePT; 0 is standard pretraining, StdPT); ``m_ft > 0`` is
pause-finetuning (PauseFT; 0 is StdFT). The pause token is added with :func:`add_pause_token` before training
whenever a stage uses it, so a StdPT model meets ``<pause>`` for the first time in PauseFT, as in the paper.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.pause.collators import PauseFinetuneCollator, PausePretrainCollator
from tenfold.pause.tokens import add_pause_token

SIZES = {  # Llama-style decoder-only configs for training from scratch on a CPU
    "tiny": dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4),
    "small": dict(hidden_size=256, intermediate_size=768, num_hidden_layers=6, num_attention_heads=8),
}


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


@dataclass
class _State:
    step: int = 0
    losses: list = field(default_factory=list)


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
    if len(stream) <= cfg.seq_len:
        raise TenfoldError(f"the corpus ({len(stream)} tokens) is shorter than one sequence ({cfg.seq_len})")
    rng = np.random.default_rng([cfg.seed, step])
    starts = rng.integers(0, len(stream) - cfg.seq_len, cfg.batch_size)
    rows = [stream[s:s + cfg.seq_len].tolist() for s in starts]
    collate = PausePretrainCollator(pause if pause is not None else -1, pad, cfg.pause_rate, seed=[cfg.seed, step, 1])
    return collate(rows)


def _finetune_batch(pairs: list, cfg: TrainConfig, step: int, pause: int | None, pad: int, eos: int) -> dict:
    rng = np.random.default_rng([cfg.seed, step])
    chosen = [pairs[i] for i in rng.integers(0, len(pairs), cfg.batch_size)]
    return PauseFinetuneCollator(pause if pause is not None else -1, pad, cfg.m_ft, end=eos)(chosen)


def check_run_dir(run_dir: str | Path | None, resume: bool) -> None:
    if run_dir is None:
        if resume:
            raise TenfoldError("--resume needs the run directory (--out)")
        return
    run_dir = Path(run_dir)
    if resume and not (run_dir / "state.json").exists():
        raise TenfoldError(f"nothing to resume in {run_dir} (no state.json)")
    if not resume and any((run_dir / name).exists() for name in ("state.json", "checkpoint", "model")):
        raise TenfoldError(f"{run_dir} already holds a training run; pass --resume to continue it or choose "
                           "another --out")


def train(model, tokenizer, cfg: TrainConfig, *, stream: np.ndarray | None = None, pairs: list | None = None,
          run_dir: str | Path | None = None, resume: bool = False, progress=None) -> dict:
    """Pretrain on ``stream`` (token ids) or fine-tune on ``pairs`` (encoded prompt/answer); return the history.

    ``model`` is trained in place. With ``run_dir``, checkpoints go to ``run_dir/checkpoint`` and the finished
    model and tokenizer to ``run_dir/model``.
    """
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    cfg.check()
    if (stream is None) == (pairs is None):
        raise TenfoldError("give either a token stream (pretraining) or prompt/answer pairs (fine-tuning)")
    check_run_dir(run_dir, resume)
    uses_pause = cfg.pause_rate > 0 if stream is not None else cfg.m_ft > 0
    pause = add_pause_token(model, tokenizer) if uses_pause else None
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    if pad is None or eos is None:
        raise TenfoldError("the tokenizer needs a pad and an end-of-sequence token")

    accelerator = Accelerator()
    torch.manual_seed(cfg.seed)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    schedule = get_cosine_schedule_with_warmup(optimizer, int(cfg.warmup * cfg.steps), cfg.steps)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    state = _State()
    ckpt = Path(run_dir) / "checkpoint" if run_dir is not None else None
    if resume:
        accelerator.load_state(str(ckpt))
        state = _State(**json.loads((Path(run_dir) / "state.json").read_text()))
    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    with torch.enable_grad():
        while state.step < cfg.steps:
            if stream is not None:
                batch = _pretrain_batch(stream, cfg, state.step, pause, pad)
            else:
                batch = _finetune_batch(pairs, cfg, state.step, pause, pad, eos)
            batch = {k: v[rank::world].to(accelerator.device) for k, v in batch.items()}
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TenfoldError(f"the loss became {loss.item()} at step {state.step}; lower the learning rate")
            accelerator.backward(loss)
            if cfg.clip:
                accelerator.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            state.step += 1
            state.losses.append(round(float(loss.item()), 5))
            if progress:
                progress(state.step, cfg.steps, state.losses[-1])
            if ckpt is not None and cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 \
                    and state.step < cfg.steps:
                _checkpoint(accelerator, ckpt, Path(run_dir), state, cfg)
    model.eval()
    unwrapped = accelerator.unwrap_model(model)
    history = {"config": asdict(cfg), "losses": state.losses, "pause_id": pause,
               "parameters": sum(p.numel() for p in unwrapped.parameters())}
    if run_dir is not None and accelerator.is_main_process:
        save_checkpoint(unwrapped, tokenizer, Path(run_dir) / "model")
        _write_json(Path(run_dir) / "history.json", history)
        _write_json(Path(run_dir) / "state.json", asdict(state))
        if ckpt.exists():
            shutil.rmtree(ckpt)
    return history


def _write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def _checkpoint(accelerator, ckpt: Path, run_dir: Path, state: _State, cfg: TrainConfig) -> None:
    """Save optimizer/model/RNG state, then the step counter (a crash in between resumes from the older pair)."""
    tmp = ckpt.with_name("checkpoint.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(tmp, ckpt)
        _write_json(run_dir / "state.json", asdict(state))
        _write_json(run_dir / "config.json", asdict(cfg))


def save_checkpoint(model, tokenizer, path: str | Path) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def load_checkpoint(path: str | Path):
    """(model, tokenizer) saved by :func:`save_checkpoint` or a training run's ``model`` directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if (path / "model" / "config.json").exists():
        path = path / "model"
    if not (path / "config.json").exists():
        raise TenfoldError(f"no saved model in {path} (expected config.json)")
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    return model, AutoTokenizer.from_pretrained(path)
