"""The training loop of tenfold, on ``accelerate``: one loop for every paper that trains something.

:func:`train_steps` is the loop: ``Accelerator.prepare``, backward through the accelerator (DDP averages the
gradients of the processes of ``accelerate launch``), gradient clipping, optimizer and schedule steps, resumable
checkpoints (``Accelerator.save_state`` plus the step counter in ``run_dir/checkpoint``). It asks
``batch_for_step(step)`` for each global batch: batches that depend only on the step (and on checkpointed
generators) make an interrupted run resume bit-for-bit, and every process takes its own rows of the same global
batch (:func:`my_rows`). :func:`fit` is that loop for causal LMs - AdamW (no decay on gains and biases), linear
warmup and cosine decay, the finished model and tokenizer in ``run_dir/model`` - used by pause-pretraining/-finetuning
(Goyal et al. 2023), RA-DIT's LM-ft (Lin et al. 2023) and the VLM; RA-DIT's retriever, CLIP, and Kosmos-G's decoder
and aligner call :func:`train_steps` directly (all but the retriever, which keeps a constant rate, with the
optimizer and schedule of :func:`adamw_cosine`).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tenfold.devices import CPU, device_type
from tenfold.errors import TenfoldError, TrainingStopped


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


def _launched_processes() -> int:
    """The number of processes the launcher (``accelerate launch``, torchrun) started: ``WORLD_SIZE``, else 1."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        raise TenfoldError(f"WORLD_SIZE must be a number (got {os.environ['WORLD_SIZE']!r})") from None


def _on_cpu() -> bool:
    """Several processes but no GPU: gloo on CPU. (accelerate alone would see a launched process without a GPU as
    a lone process, and N processes would each train their own copy.)"""
    return _launched_processes() > 1 and not torch.cuda.is_available() and not (
        hasattr(torch, "xpu") and torch.xpu.is_available())


def process_state():
    """accelerate's ``PartialState`` for this process (gloo on CPU when launched as several processes without a GPU).

    Raises TenfoldError when the launcher started N > 1 processes but accelerate sees a different number, or when
    accelerate cannot join them (e.g. ``WORLD_SIZE`` set without a launcher, so no ``MASTER_ADDR``)."""
    from accelerate import PartialState

    try:
        state = PartialState(cpu=_on_cpu())
    except ValueError as exc:  # accelerate's checks of the launcher's environment
        raise TenfoldError(f"cannot join the {_launched_processes()} launched processes (WORLD_SIZE): "
                           f"{str(exc).splitlines()[0]}; start them with `accelerate launch`") from None
    if state.num_processes != _launched_processes():
        raise TenfoldError(f"launched as {_launched_processes()} processes but accelerate sees {state.num_processes}; "
                           "start several processes with `accelerate launch --multi_gpu --num_processes N`")
    return state


def is_main_process() -> bool:
    """True in the process that writes files (the only one without ``accelerate launch``)."""
    return process_state().is_main_process


def my_rows(n: int) -> tuple[slice, float]:
    """This process's rows of a global batch of ``n`` rows, and the factor for its loss.

    Under ``accelerate launch`` with W processes, process r takes rows ``r::W``. DDP averages the W gradients, so
    a per-process mean loss scaled by ``W * local_rows / n`` gives exactly the gradient of the global mean even when
    W does not divide ``n``. One process: ``(slice(0, None, 1), 1.0)``, which changes nothing.
    Raises TenfoldError when the batch has fewer rows than there are processes.
    """
    state = process_state()
    rank, world = state.process_index, state.num_processes
    if n < world:
        raise TenfoldError(f"a global batch of {n} rows cannot be shared by {world} processes (give at least {world})")
    return slice(rank, None, world), world * len(range(rank, n, world)) / n


class Forward(torch.nn.Module):
    """``fn`` as the forward of a module that owns ``modules``, so ``Accelerator.prepare`` (DDP, FSDP) can wrap a loss
    computed by any function (a method such as ``decoder.loss``) over those modules' parameters."""

    def __init__(self, fn: Callable, *modules: torch.nn.Module):
        super().__init__()
        self.fn = fn
        self.parts = torch.nn.ModuleList(modules)

    def forward(self, *args, **kwargs):
        return self.fn(*args, **kwargs)


class GeneratorState:
    """A numpy ``Generator`` or ``torch.Generator`` that ``Accelerator.save_state``/``load_state`` checkpoint
    (``register_for_checkpointing``), so a loop that draws from it sequentially resumes on the same draws."""

    def __init__(self, generator):
        if not isinstance(generator, (np.random.Generator, torch.Generator)):
            raise TenfoldError(f"cannot checkpoint a {type(generator).__name__} (a numpy or torch generator)")
        self.generator = generator

    def state_dict(self) -> dict:
        if isinstance(self.generator, torch.Generator):
            return {"torch": self.generator.get_state()}
        return {"numpy": json.dumps(self.generator.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        if "torch" in state:
            self.generator.set_state(state["torch"])
        else:
            self.generator.bit_generator.state = json.loads(state["numpy"])


def train_steps(module: torch.nn.Module, optimizer, batch_for_step: Callable[[int], object],
                loss_of: Callable, *, steps: int, schedule=None, clip: float | None = None,
                run_dir: str | Path | None = None, resume: bool = False, checkpoint_every: int = 0,
                progress=None, generators=(), finish: Callable | None = None, stop_after: int | None = None,
                train_module: torch.nn.Module | None = None) -> list:
    """The one training loop of tenfold, on ``accelerate.Accelerator``; return one record per step.

    Each step: ``loss_of(prepared_module, batch_for_step(step))`` gives a scalar loss tensor, or ``(loss, extras)``
    with ``extras`` a dict of scalar tensors to log; the accelerator back-propagates it (DDP averages gradients over
    processes), clips the gradient norm to ``clip``, steps the optimizer and then ``schedule`` once (not once per
    process: ``step_scheduler_with_optimizer=False``). ``module`` must own every trained parameter and its forward
    must compute the loss (wrap a function in :class:`Forward`). The record of a step is its loss averaged over
    processes (with :func:`my_rows`' factors: the global batch's mean), rounded to 5 decimals, or
    ``{**extras, "total": loss}`` when ``loss_of`` returns extras.

    With ``run_dir``, ``Accelerator.save_state`` (model, optimizer, schedule, RNG states and ``generators``, see
    :class:`GeneratorState`) plus ``state.json`` (step, records) go to ``run_dir/checkpoint`` every
    ``checkpoint_every`` steps, and ``resume`` continues from there: with ``batch_for_step`` a function of the step
    (and of checkpointed generators), a resumed run equals an uninterrupted one, under any number of processes.
    ``finish(accelerator, prepared_module)`` runs after the last step, before the checkpoint is removed. ``stop_after`` (a step
    count, e.g. for a job's time limit) saves a checkpoint after that step and raises :class:`TrainingStopped`.
    ``train_module`` (by default ``module``) is in train mode for the run and in eval mode after it, however it
    ends (Kosmos-G's instruct stage names its aligner alone: the MLLM it may also train keeps its mode).
    Raises TenfoldError for a non-finite loss, a run directory that already holds a run (without ``resume``) or has
    nothing to resume, and ``stop_after`` without a run directory.
    """
    trained = module if train_module is None else train_module
    trained.train()
    try:
        from accelerate.utils import send_to_device

        if steps < 1:
            raise TenfoldError(f"steps must be at least 1 (got {steps})")
        if stop_after is not None and (run_dir is None or stop_after < 1):
            raise TenfoldError("stopping early needs a run directory to checkpoint into and a step count >= 1")
        check_run_dir(run_dir, resume)
        if run_dir is not None:
            Path(run_dir).mkdir(parents=True, exist_ok=True)
        accelerator = _accelerator()
        prepared = accelerator.prepare(module, optimizer, *([schedule] if schedule is not None else []))
        prepared, optimizer, schedule = (*prepared, None) if schedule is None else prepared
        for g in generators:
            accelerator.register_for_checkpointing(g)
        ckpt = Path(run_dir) / "checkpoint" if run_dir is not None else None
        step, records = _resume(accelerator, Path(run_dir), steps, stop_after) if resume else (0, [])
        with torch.enable_grad():
            while step < steps:
                # batches are built on the CPU; the accelerator's device may be a GPU (tensors nested in tuples, lists
                # and dicts move, anything else stays as it is)
                out = loss_of(prepared, send_to_device(batch_for_step(step), accelerator.device))
                values, extras = _optimizer_step(accelerator, prepared, optimizer, schedule, out, step, clip)
                step += 1
                records.append(dict(zip(extras, values[1:])) | {"total": values[0]} if extras else values[0])
                if progress:
                    progress(step, steps, values[0])
                if ckpt is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                    _checkpoint(accelerator, ckpt, {"step": step, "losses": records})
                if stop_after is not None and step == stop_after and step < steps:
                    if not (checkpoint_every and step % checkpoint_every == 0):
                        _checkpoint(accelerator, ckpt, {"step": step, "losses": records})
                    raise TrainingStopped(f"stopped after step {step} of {steps} as asked; continue with --resume")
        if finish is not None:
            finish(accelerator, prepared)
        if run_dir is not None:
            _finished(accelerator, Path(run_dir), {"step": step, "losses": records,
                                                   "processes": accelerator.num_processes})
        return records
    finally:
        trained.eval()


def _accelerator():
    """The ``accelerate.Accelerator`` of :func:`train_steps`: the schedule steps once per optimizer step (not once per
    process), on the CPU when several processes were launched without a GPU or when the CPU was chosen.

    Raises TenfoldError when the processes do not add up (:func:`process_state`) or accelerate cannot set up the
    run (e.g. an FSDP/DeepSpeed config on a machine without GPUs)."""
    from accelerate import Accelerator

    process_state()  # checks the number of processes and picks gloo on CPU
    # the CPU also when a GPU is there but `--device cpu` / $TENFOLD_DEVICE=cpu chose the CPU
    try:
        return Accelerator(cpu=_on_cpu() or device_type() == CPU, step_scheduler_with_optimizer=False)
    except (RuntimeError, ImportError, ValueError) as exc:  # e.g. an FSDP/DeepSpeed config on a machine without GPUs
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        raise TenfoldError(f"accelerate cannot set up this run ({type(exc).__name__}: {lines[0]})") from None


def _resume(accelerator, run_dir: Path, steps: int, stop_after: int | None) -> tuple[int, list]:
    """Load the checkpoint of the run in ``run_dir`` into the prepared objects; (its step, the records so far).

    Raises TenfoldError when there is no checkpoint, or ``stop_after`` is not past the checkpoint's step."""
    ckpt = run_dir / "checkpoint"
    tmp = ckpt.with_name("checkpoint.tmp")
    # A run stopped after the old checkpoint was removed and before the new one was moved in: checkpoint.tmp is
    # whole once its state.json is there (written last).
    src = ckpt if ckpt.exists() else tmp if (tmp / "state.json").exists() else None
    if src is None:
        raise TenfoldError(f"the run in {run_dir} has no checkpoint to resume (it finished or never saved one)")
    accelerator.load_state(str(src))
    counter = src / "state.json"  # the step the weights are at; older checkpoints keep it in run_dir only
    saved = json.loads((counter if counter.exists() else run_dir / "state.json").read_text())
    step, records = saved["step"], saved["losses"]
    if stop_after is not None and stop_after <= step:  # would never be reached: the run would go to the end
        raise TenfoldError(f"--stop-after {stop_after}: the checkpoint is already at step {step} of {steps}; "
                           "give a later step, or leave it out to finish the run")
    accelerator.wait_for_everyone()  # every process has read it before it moves
    if src == tmp and accelerator.is_main_process:
        os.replace(tmp, ckpt)
    return step, records


def _optimizer_step(accelerator, prepared, optimizer, schedule, out, step: int, clip: float | None):
    """Back-propagate ``loss_of``'s ``out`` (a loss, or ``(loss, extras)``) and step the optimizer and schedule;
    (the loss and extras averaged over processes, rounded to 5 decimals; the extras' names).

    Raises TenfoldError for a non-finite loss (before any weight changes)."""
    loss, extras = out if isinstance(out, tuple) else (out, {})
    logged = accelerator.reduce(torch.stack([loss.detach().float(), *(v.detach().float() for v in
                                                                        extras.values())]), "mean")
    if not torch.isfinite(logged[0]):  # every process sees the same global value, so all stop here
        raise TenfoldError(f"the loss became {logged[0].item()} at step {step}; lower the learning rate")
    accelerator.backward(loss)
    if clip:
        accelerator.clip_grad_norm_(prepared.parameters(), clip)
    optimizer.step()
    if schedule is not None:
        schedule.step()
    optimizer.zero_grad()
    return [round(float(v), 5) for v in logged.tolist()], list(extras)


def _finished(accelerator, run_dir: Path, state: dict) -> None:
    """A finished run: its ``state.json`` (step, records, processes) in ``run_dir``, and no checkpoint left."""
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(run_dir / "state.json", state)
        ckpt = run_dir / "checkpoint"
        if ckpt.exists():
            shutil.rmtree(ckpt)


def adamw_cosine(params_or_groups, lr: float, steps: int, *, warmup: int, weight_decay: float = 0.01,
                 betas: tuple[float, float] = (0.9, 0.999)):
    """AdamW and its learning-rate schedule for a run of ``steps`` optimizer steps: ``(optimizer, scheduler)``.

    The rate rises linearly from 0 to ``lr`` over the first ``warmup`` steps (a step count: each caller keeps its own
    rule, e.g. ``steps // 20``), then falls to 0 at ``steps`` along half a cosine; step the scheduler once per
    optimizer step (:func:`train_steps` does). ``params_or_groups``: an iterable of parameters, or torch parameter
    groups (dicts with ``params`` and, e.g., their own ``weight_decay``); ``weight_decay`` (decoupled, AdamW's) and
    ``betas`` apply where a group sets none. Checks nothing of its own: torch raises ValueError for a negative
    learning rate or weight decay, or a beta outside [0, 1). Built on ``torch.optim.AdamW`` and transformers'
    ``get_cosine_schedule_with_warmup``.
    """
    from transformers import get_cosine_schedule_with_warmup

    optimizer = torch.optim.AdamW(params_or_groups, lr=lr, betas=betas, weight_decay=weight_decay)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, warmup, steps)


def fit(model, batch_for_step: Callable[[int], dict], *, steps: int, lr: float, warmup: float = 0.05,
        weight_decay: float = 0.1, clip: float = 1.0, seed: int = 0, run_dir: str | Path | None = None,
        resume: bool = False, checkpoint_every: int = 0, progress=None, tokenizer=None,
        stop_after: int | None = None) -> list[float]:
    """Train the causal LM ``model`` in place for ``steps`` steps; return the loss of every step (resumed runs included).

    ``batch_for_step(step)`` -> the global batch (``input_ids``/``attention_mask``/``labels``, each (rows, tokens));
    under W processes each takes rows ``r::W`` and its mean token loss is weighted by its share of the batch's
    label tokens (``labels[:, 1:] != -100``, the tokens transformers' shifted loss averages), so the averaged
    gradient and the logged loss are the global batch's token mean, as with one process. Raises TenfoldError for a
    non-positive learning rate, a model without trainable parameters, a batch with fewer rows than processes or
    without label tokens, and a non-finite loss; ``stop_after``: see :func:`train_steps`.
    """
    if not (lr > 0 and math.isfinite(lr)):
        raise TenfoldError(f"the learning rate must be a positive number (got {lr})")
    torch.manual_seed(seed)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not trainable:
        raise TenfoldError("the model has no trainable parameters")
    groups = [{"params": [p for _, p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
              {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0}]  # no decay on gains, biases
    optimizer, schedule = adamw_cosine(groups, lr, steps, warmup=int(warmup * steps), betas=(0.9, 0.95))

    def local_batch(step: int) -> tuple[dict, float]:
        batch = batch_for_step(step)
        rows, _ = my_rows(len(batch["input_ids"]))
        tokens = (batch["labels"][:, 1:] != IGNORE) if "labels" in batch else None
        total = int(tokens.sum()) if tokens is not None else len(batch["input_ids"])
        if total == 0:
            raise TenfoldError(f"the batch of step {step} has no label tokens to learn")
        mine = int(tokens[rows].sum()) if tokens is not None else len(range(len(batch["input_ids"]))[rows])
        return {k: v[rows] for k, v in batch.items()}, rows.step * mine / total  # rows.step: the processes

    def loss_of(prepared, item) -> torch.Tensor:
        batch, share = item
        batch = {k: v.to(next(model.parameters()).device) for k, v in batch.items()}
        out = prepared(**batch)
        return out.loss * share if share else out.logits.sum() * 0.0  # a process without label tokens adds nothing

    def finish(accelerator, prepared) -> None:
        if run_dir is not None and tokenizer is not None:
            state = accelerator.get_state_dict(prepared)  # every process: FSDP gathers its shards here
            if accelerator.is_main_process:
                save_checkpoint(accelerator.unwrap_model(prepared), tokenizer, Path(run_dir) / "model", state)

    return train_steps(model, optimizer, local_batch, loss_of, steps=steps, schedule=schedule, clip=clip,
                       run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       finish=finish, stop_after=stop_after)


class _DropTiedWeightNotice(logging.Filter):
    """accelerate warns "Removed shared tensor {...} while saving" at every checkpoint of a model whose output
    projection is tied to its input embedding (the bundled model, pause's models): expected, and reloading ties
    them again, so the line is noise on every save."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor" not in str(record.getMessage())


@contextlib.contextmanager
def _tied_weights_quiet():
    log, notice = logging.getLogger("accelerate.utils.other"), _DropTiedWeightNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def _checkpoint(accelerator, ckpt: Path, state: dict) -> None:
    """Save optimizer/model/RNG state and the step counter together into ``checkpoint.tmp``, then swap it in.

    The counter is written last, inside the checkpoint, so weights and step always match: a run stopped before it
    resumes from the older checkpoint, one stopped between removing the older and moving in the new resumes from
    ``checkpoint.tmp``.
    """
    tmp = ckpt.with_name("checkpoint.tmp")
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)
    accelerator.wait_for_everyone()
    with _tied_weights_quiet():
        accelerator.save_state(str(tmp))  # every process writes its RNG state beside the main process's files
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "state.json", state)
        if ckpt.exists():
            shutil.rmtree(ckpt)
        os.replace(tmp, ckpt)
        write_json(ckpt.parent / "state.json", state)
    accelerator.wait_for_everyone()


def save_checkpoint(model, tokenizer, path: str | Path, state_dict: dict | None = None) -> Path:
    """``model.save_pretrained`` (optionally with a gathered ``state_dict``) and the tokenizer into ``path``."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, **({"state_dict": state_dict} if state_dict is not None else {}))
    tokenizer.save_pretrained(path)
    return path


def load_checkpoint(path: str | Path, device=None):
    """(model, tokenizer) saved by :func:`save_checkpoint` or a training run's ``model`` directory, on ``device``
    (auto/None: a GPU when torch sees one, else the CPU; :func:`tenfold.devices.resolve_device`), in its saved dtype."""
    from tenfold.devices import resolve_device
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if (path / "model" / "config.json").exists():
        path = path / "model"
    if not (path / "config.json").exists():
        raise TenfoldError(f"no saved model in {path} (expected config.json)")
    device = resolve_device(device)
    model = AutoModelForCausalLM.from_pretrained(path).to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def load_model(source: str | None, device=None, dtype=None):
    """(model, tokenizer) from a training run directory, a saved model directory, or an LM name/path, on ``device``
    (see :func:`load_checkpoint`; an LM name in ``dtype``, by default :func:`tenfold.devices.default_dtype`)."""
    from tenfold.models.lm import load_lm

    if source:
        path = Path(source)
        if path.is_dir() and ((path / "config.json").exists() or (path / "model" / "config.json").exists()):
            return load_checkpoint(path, device)
        if path.exists() and not path.is_dir():
            raise TenfoldError(f"{source} is a file; give a run directory, a saved model directory or a model name")
    return load_lm(source, quantize=None, device=device, dtype=dtype)
