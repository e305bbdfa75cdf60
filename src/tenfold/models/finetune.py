"""A resumable training loop on ``accelerate`` shared by the papers that train language models.

``fit(model, batch_for_step, ...)`` runs AdamW (no decay on gains and biases) with linear warmup and cosine
decay, clips gradients, and asks ``batch_for_step(step)`` for each global batch: batches that depend only
on the step make an interrupted run resume bit-for-bit, and under ``accelerate launch`` every process takes
its own rows of the same global batch. Checkpoints (``Accelerator.save_state`` plus the step counter) are
written every ``checkpoint_every`` steps to ``run_dir/checkpoint``; the finished model and tokenizer go to
``run_dir/model``. Used by pause-pretraining/-finetuning (Goyal et al. 2023) and RA-DIT's LM-ft (Lin et al. 2023).
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import torch

from tenfold.errors import TenfoldError


IGNORE = -100  # transformers' ignore index for labels


def answer_only_batch(pairs: list[tuple[list[int], list[int]]], pad: int) -> dict:
    """Right-padded ``input_ids``/``attention_mask``/``labels`` for (prompt, target) pairs; loss on targets only."""
    if not pairs:
        raise TenfoldError("no examples in the batch")
    rows = [list(p) + list(t) for p, t in pairs]
    labels = [[IGNORE] * len(p) + list(t) for p, t in pairs]
    width = max(map(len, rows))

    def pad_to(rs, value):
        return torch.tensor([r + [value] * (width - len(r)) for r in rs], dtype=torch.long)

    return {"input_ids": pad_to(rows, pad), "attention_mask": pad_to([[1] * len(r) for r in rows], 0),
            "labels": pad_to(labels, IGNORE)}


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


def write_json(path: Path, obj) -> None:
    """Write JSON atomically (a crash never leaves half a file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def fit(model, batch_for_step: Callable[[int], dict], *, steps: int, lr: float, warmup: float = 0.05,
        weight_decay: float = 0.1, clip: float = 1.0, seed: int = 0, run_dir: str | Path | None = None,
        resume: bool = False, checkpoint_every: int = 0, progress=None, tokenizer=None) -> list[float]:
    """Train ``model`` in place for ``steps`` steps; return the loss of every step (resumed runs included)."""
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    if not (lr > 0 and math.isfinite(lr)):
        raise TenfoldError(f"the learning rate must be a positive number (got {lr})")
    check_run_dir(run_dir, resume)
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator()
    torch.manual_seed(seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise TenfoldError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW([{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
                                   {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}],
                                  lr=lr, betas=(0.9, 0.95))
    schedule = get_cosine_schedule_with_warmup(optimizer, int(warmup * steps), steps)
    model, optimizer, schedule = accelerator.prepare(model, optimizer, schedule)
    step, losses = 0, []
    ckpt = Path(run_dir) / "checkpoint" if run_dir is not None else None
    if resume:
        if not ckpt.exists():
            raise TenfoldError(f"the run in {run_dir} has no checkpoint to resume (it finished or never saved one)")
        accelerator.load_state(str(ckpt))
        saved = json.loads((Path(run_dir) / "state.json").read_text())
        step, losses = saved["step"], saved["losses"]
    rank, world = accelerator.process_index, accelerator.num_processes
    model.train()
    with torch.enable_grad():
        while step < steps:
            batch = {k: v[rank::world].to(accelerator.device) for k, v in batch_for_step(step).items()}
            loss = model(**batch).loss
            if not torch.isfinite(loss):
                raise TenfoldError(f"the loss became {loss.item()} at step {step}; lower the learning rate")
            accelerator.backward(loss)
            if clip:
                accelerator.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            step += 1
            losses.append(round(float(loss.item()), 5))
            if progress:
                progress(step, steps, losses[-1])
            if ckpt is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                _checkpoint(accelerator, ckpt, {"step": step, "losses": losses})
    model.eval()
    if run_dir is not None and accelerator.is_main_process:
        if tokenizer is not None:
            save_checkpoint(accelerator.unwrap_model(model), tokenizer, Path(run_dir) / "model")
        write_json(Path(run_dir) / "state.json", {"step": step, "losses": losses})
        if ckpt.exists():
            shutil.rmtree(ckpt)
    return losses


def _checkpoint(accelerator, ckpt: Path, state: dict) -> None:
    """Save optimizer/model/RNG state, then the step counter (a crash in between resumes from the older pair)."""
    tmp = ckpt.with_name("checkpoint.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(tmp, ckpt)
        write_json(ckpt.parent / "state.json", state)


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


def load_model(source: str | None):
    """(model, tokenizer) from a training run directory, a saved model directory, or an LM name/path."""
    from tenfold.models.lm import load_lm

    if source:
        path = Path(source)
        if path.is_dir() and ((path / "config.json").exists() or (path / "model" / "config.json").exists()):
            return load_checkpoint(path)
        if path.exists() and not path.is_dir():
            raise TenfoldError(f"{source} is a file; give a run directory, a saved model directory or a model name")
    return load_lm(source, quantize=None)
