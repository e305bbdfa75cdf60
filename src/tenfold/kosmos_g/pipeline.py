"""Building a Kosmos-G end to end (Pan et al. 2023, Sec. 2.2-2.4), as the CLI and the experiment do it.

1. The foundation Kosmos-G starts from, which it does not train: a CLIP text encoder + diffusion U-Net pair (here
   the small CLIP and a small U-Net trained on the world: :func:`foundation`) and a multimodal LLM (here the small
   VLM on that CLIP's vision tower: :func:`build_mllm`). Both are deterministic in their settings, so they are
   cached under ``$TENFOLD_HOME/kosmos_g/foundation/<settings>`` and reused by later runs with the same settings;
   the CLIP + MLLM part comes from (or goes to) the shared store of :mod:`tenfold.vision.cache`.
2. AlignerNet, trained in two stages: ``align`` on captions, then compositional instruction tuning through the
   frozen U-Net (:func:`train_aligner`).
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.vision.cache import stage_progress


@dataclass(frozen=True)
class FoundationSettings:
    clip_steps: int = 300
    decoder_steps: int = 300
    decoder_batch: int = 32
    decoder_channels: tuple = (32, 64, 96)
    prediction_type: str = "sample"
    vlm_steps: int = 60
    vlm_batch: int = 16
    image_tokens: int = 16
    seed: int = 0
    lora_rank: int = 0

    def key(self) -> str:
        """The cache key; ``tasks4``: the U-Net also trains on the layouts of the four instruction tasks' targets
        (a cache from before the three-subject task, without it, is not reused)."""
        from tenfold.kosmos_g.tasks import TASKS

        ch = "-".join(map(str, self.decoder_channels))
        lora = f"_lora{self.lora_rank}" if self.lora_rank else ""
        return (f"clip{self.clip_steps}_dec{self.decoder_steps}x{self.decoder_batch}_{ch}_{self.prediction_type}_"
                f"tasks{len(TASKS)}_vlm{self.vlm_steps}x{self.vlm_batch}_t{self.image_tokens}{lora}_s{self.seed}")

    def recipe(self):
        """The CLIP + MLLM part, shared with the other experiments through :mod:`tenfold.vision.cache`."""
        from tenfold.vision.cache import VLMRecipe

        return VLMRecipe(clip_steps=self.clip_steps, vlm_steps=self.vlm_steps, vlm_batch=self.vlm_batch,
                         image_tokens=self.image_tokens, lora_rank=self.lora_rank, seed=self.seed)


def foundation_dir(settings: FoundationSettings) -> Path:
    from tenfold import home

    return Path(home()) / "kosmos_g" / "foundation" / settings.key()


def foundation(settings: FoundationSettings, cache: bool = True, progress=None):
    """(clip, clip tokenizer, decoder, vlm, info): loaded from the cache when it holds these settings, else trained
    (CLIP and the VLM on its vision tower from :func:`tenfold.vision.cache.cached_vlm`, trained there only if no
    run stored them yet; then the U-Net on CLIP's text states) and, with ``cache``, stored there. ``info`` says
    which, with the training time (that of a stored CLIP + VLM included)."""
    import torch
    from transformers import AutoTokenizer, CLIPModel

    from tenfold.kosmos_g.decoder import TextConditionedDecoder, small_unet, train_decoder
    from tenfold.kosmos_g.tasks import decoder_scenes
    from tenfold.provenance import note_model
    from tenfold.vision.cache import atomic_dir, cached_vlm
    from tenfold.vision.vlm import VisionLanguageModel

    where = foundation_dir(settings)
    if cache and (where / "done.json").exists():
        info = json.loads((where / "done.json").read_text())
        clip = CLIPModel.from_pretrained(where / "clip").eval()
        tok = AutoTokenizer.from_pretrained(where / "clip")
        decoder = TextConditionedDecoder.load(where / "decoder")
        vlm = VisionLanguageModel.load(where / "mllm", lm_dtype=torch.bfloat16)
        note_model(f"kosmos-g-foundation/{settings.key()}", where)
        return clip, tok, decoder, vlm, {**info, "source": f"cached in {where}"}
    t0 = time.perf_counter()
    clip, tok, vlm, base = cached_vlm(settings.recipe(), progress=progress, cache=cache)
    decoder = TextConditionedDecoder(small_unet(clip.config.text_config.hidden_size, 32, settings.decoder_channels,
                                                seed=settings.seed), prediction_type=settings.prediction_type)
    dec_losses = train_decoder(decoder, clip, tok, settings.decoder_steps, settings.decoder_batch, lr=2e-3,
                               seed=settings.seed, scene_source=decoder_scenes,
                               progress=stage_progress(progress, "U-Net", settings.decoder_steps))
    took = time.perf_counter() - t0 + (base["train_s"] if base["source"] != "trained in this run" else 0)
    info = {"settings": asdict(settings), "trained": time.strftime("%Y-%m-%d %H:%M"), "train_s": round(took, 1),
            "clip and mllm": base["source"],
            "losses": {"clip": base["losses"]["clip"], "decoder": dec_losses, "mllm": base["losses"]["vlm"]}}
    if cache:
        with atomic_dir(foundation_dir(settings)) as tmp:
            clip.save_pretrained(tmp / "clip")
            tok.save_pretrained(tmp / "clip")
            decoder.save(tmp / "decoder")
            vlm.save(tmp / "mllm")
            (tmp / "done.json").write_text(json.dumps(info))
    note_model(f"kosmos-g-foundation/{settings.key()}", foundation_dir(settings) if cache else None)
    return clip, tok, decoder, vlm, {**info, "source": "trained in this run"}


def train_aligner(model, align_steps: int, instruct_steps: int, align_batch: int = 32, instruct_batch: int = 16,
                  seed: int = 0, progress=None, train_mllm: bool = True, anchor_weight: float = 0.0,
                  instruct_lr: float = 3e-4) -> dict:
    """Kosmos-G's two aligner stages on ``model`` (a :class:`~tenfold.kosmos_g.model.KosmosG`); their losses.
    ``train_mllm`` / ``anchor_weight``: see :func:`~tenfold.kosmos_g.training.instruct_stage`."""
    from tenfold.kosmos_g.training import align_stage, instruct_stage

    if align_steps < 0 or instruct_steps < 0 or align_steps + instruct_steps == 0:
        raise TenfoldError("train at least one aligner stage (--align-steps / --instruct-steps)")
    out = {"align": [], "instruct": []}
    if align_steps:
        out["align"] = align_stage(model.aligner, model.vlm, model.clip, model.clip_tokenizer, align_steps,
                                   align_batch, seed=seed, progress=stage_progress(progress, "align", align_steps))
    if instruct_steps:
        out["instruct"] = instruct_stage(model.aligner, model.vlm, model.decoder, instruct_steps, instruct_batch,
                                         lr=instruct_lr, seed=seed,
                                         progress=stage_progress(progress, "instruct", instruct_steps),
                                         train_mllm=train_mllm, anchor_weight=anchor_weight, clip_model=model.clip,
                                         clip_tokenizer=model.clip_tokenizer)
    return out
