"""The multimodal foundation trained once per recipe and kept: the small CLIP and the VLM built on it (Sec. 2 of
the foundation issue; Kosmos-G and the GPT-4V probes both start from a pretrained MLLM, so does our miniature).

A :class:`VLMRecipe` names everything that decides the trained weights (steps, batch, image tokens, LoRA rank,
seed); training with it is deterministic, so its result is stored under ``$TENFOLD_HOME/vision/trained/<key>`` and
any later caller with the same recipe loads it instead of training again. ``vision-foundation`` stores what it
trains; ``kosmos-g`` and ``lmm-probing`` load it (or train it, once). Every store is atomic: a directory is
written beside the target as ``<key>.partial-<pid>`` and renamed when complete, so a killed run leaves no half-cache.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

from tenfold.provenance import note_model

DONE = "done.json"


@dataclass(frozen=True)
class VLMRecipe:
    clip_steps: int = 300
    vlm_steps: int = 100
    clip_batch: int = 64
    vlm_batch: int = 16
    image_tokens: int = 16
    lora_rank: int = 16
    lr: float = 1e-3
    seed: int = 0

    def key(self) -> str:
        return (f"clip{self.clip_steps}x{self.clip_batch}_vlm{self.vlm_steps}x{self.vlm_batch}_t{self.image_tokens}_"
                f"lora{self.lora_rank}_lr{self.lr:g}_s{self.seed}")

    def describe(self) -> str:
        lora = f", LoRA {self.lora_rank}" if self.lora_rank else ""
        return f"CLIP {self.clip_steps} steps, VLM {self.vlm_steps} steps{lora}"


def recipe_dir(recipe: VLMRecipe) -> Path:
    from tenfold import home

    return Path(home()) / "vision" / "trained" / recipe.key()


@contextmanager
def atomic_dir(where: Path):
    """Yield a fresh staging folder beside ``where`` (``<name>.partial-<pid>``, this process's own) to write into;
    when the block ends normally it is published as ``where`` by one rename, and on any exception it is removed.

    Two processes building the same cache at once (two runs, two pytest workers) each write their own folder; the
    content is the same (a recipe's training is deterministic), so the first to finish publishes it and the later
    one discards its copy, never removing a cache another process may be reading. Staging folders of processes
    that no longer run are removed."""
    where = Path(where)
    where.parent.mkdir(parents=True, exist_ok=True)
    for stale in where.parent.glob(where.name + ".partial*"):
        pid = stale.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and _running(int(pid))):
            shutil.rmtree(stale, ignore_errors=True)  # left by a killed run
    tmp = where.with_name(f"{where.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        if (where / DONE).exists():  # another process published the same cache meanwhile
            shutil.rmtree(tmp)
            return
        if where.exists():
            shutil.rmtree(where)  # incomplete (no done.json): never loaded
        tmp.rename(where)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def load(recipe: VLMRecipe, lm=None):
    """(clip, clip tokenizer, vlm, info) stored for ``recipe``, or None when nothing complete is stored."""
    import torch
    from transformers import AutoTokenizer, CLIPModel
    from transformers.utils import logging as hf_logging

    from tenfold.vision.vlm import VisionLanguageModel

    where = recipe_dir(recipe)
    if not (where / DONE).exists():
        return None
    hf_logging.disable_progress_bar()
    clip = CLIPModel.from_pretrained(where / "clip").eval()
    tok = AutoTokenizer.from_pretrained(where / "clip")
    vlm = VisionLanguageModel.load(where / "vlm", lm=lm, lm_dtype=torch.bfloat16).eval()
    info = json.loads((where / DONE).read_text())
    note_model(f"vision-foundation/{recipe.key()}", where)
    return clip, tok, vlm, {**info, "source": f"cached in {where}"}


def store(recipe: VLMRecipe, clip, tokenizer, vlm, losses: dict, train_s: float) -> Path:
    """Keep a CLIP + VLM trained with ``recipe`` (and their loss curves) for later runs."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    where = recipe_dir(recipe)
    with atomic_dir(where) as tmp:
        clip.save_pretrained(tmp / "clip")
        tokenizer.save_pretrained(tmp / "clip")
        vlm.save(tmp / "vlm")
        (tmp / DONE).write_text(json.dumps({"recipe": asdict(recipe), "trained": time.strftime("%Y-%m-%d %H:%M"),
                                            "train_s": round(train_s, 1), "losses": losses}))
    return where


def stage_progress(progress, label: str, total: int):
    """A per-step callback ``(done, n, loss)`` forwarding to ``progress(label, done, total, loss)`` (or None)."""
    return None if progress is None else (lambda i, n, loss: progress(label, i, total, loss))


def trained_clip(recipe: VLMRecipe, progress=None):
    """(clip, its tokenizer, losses): the small CLIP trained contrastively per ``recipe``."""
    from tenfold.vision.clip import small_clip, train_clip, world_tokenizer

    tok = world_tokenizer()
    clip = small_clip(len(tok), seed=recipe.seed)
    losses = train_clip(clip, tok, recipe.clip_steps, recipe.clip_batch, recipe.lr, seed=recipe.seed,
                        progress=stage_progress(progress, "CLIP", recipe.clip_steps))
    return clip.eval(), tok, losses


def trained_vlm(recipe: VLMRecipe, clip, progress=None):
    """(vlm, losses): the VLM on ``clip``'s vision tower, instruction-tuned per ``recipe`` (``clip`` is unchanged)."""
    from tenfold.vision.questions import KINDS
    from tenfold.vision.vlm import build_vlm, train_vlm

    vlm = build_vlm(clip, image_tokens=recipe.image_tokens, lora_rank=recipe.lora_rank)
    losses = []
    if recipe.vlm_steps:
        losses = train_vlm(vlm, recipe.vlm_steps, recipe.vlm_batch, recipe.lr, KINDS, seed=recipe.seed,
                           progress=stage_progress(progress, "VLM", recipe.vlm_steps))
    return vlm.eval(), losses


def cached_vlm(recipe: VLMRecipe, progress=None, cache: bool = True):
    """(clip, clip tokenizer, vlm, info): stored ones when ``recipe`` was trained before, else trained now (and
    stored, with ``cache``). ``info["source"]`` says which; ``info["train_s"]`` is the training time either way."""
    if cache:
        found = load(recipe)
        if found is not None:
            return found
    t0 = time.perf_counter()
    clip, tok, clip_losses = trained_clip(recipe, progress)
    vlm, vlm_losses = trained_vlm(recipe, clip, progress)
    losses, train_s = {"clip": clip_losses, "vlm": vlm_losses}, time.perf_counter() - t0
    note_model(f"vision-foundation/{recipe.key()}", store(recipe, clip, tok, vlm, losses, train_s) if cache else None)
    return clip, tok, vlm, {"recipe": asdict(recipe), "trained": time.strftime("%Y-%m-%d %H:%M"),
                            "train_s": round(train_s, 1), "losses": losses, "source": "trained in this run"}
