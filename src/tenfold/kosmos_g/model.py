"""Kosmos-G assembled (Pan et al. 2023, Sec. 2, Fig. 2): MLLM -> AlignerNet -> the frozen diffusion U-Net.

``KosmosG`` holds the parts and does what a user wants from them: ``generate`` images from interleaved prompts
("<image> and <image> side by side" with subject images), ``generate_from_text`` with the U-Net's original CLIP
text condition (the text-only baseline), ``save`` / ``load`` one directory:

    clip/         the small CLIP (its text encoder is the U-Net's original condition) and its tokenizer
    decoder/      the U-Net (diffusers format) and decoder.json
    mllm/         the VLM (vision tower, projector, tokenizer; the LM is named, not copied)
    aligner.safetensors, kosmos_g.json
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from tenfold.errors import TenfoldError
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition, to_images

CONFIG = "kosmos_g.json"


class KosmosG:
    def __init__(self, clip_model, clip_tokenizer, decoder: TextConditionedDecoder, vlm, aligner: AlignerNet):
        self.clip, self.clip_tokenizer, self.decoder, self.vlm, self.aligner = (clip_model, clip_tokenizer, decoder,
                                                                                vlm, aligner)
        self.empty, _ = clip_text_condition(clip_model, clip_tokenizer, [""], aligner.target_length)

    @classmethod
    def assemble(cls, clip_model, clip_tokenizer, decoder: TextConditionedDecoder, vlm, width: int = 256,
                 layers: int = 2, seed: int = 0) -> "KosmosG":
        """A new (untrained) AlignerNet between ``vlm`` and ``decoder``'s conditioning space."""
        from tenfold.kosmos_g.decoder import COND_LENGTH

        torch.manual_seed(seed)
        aligner = AlignerNet(vlm.lm.config.hidden_size, decoder.cond_dim, COND_LENGTH, width=width, layers=layers)
        return cls(clip_model, clip_tokenizer, decoder, vlm, aligner)

    @torch.no_grad()
    def condition(self, prompts: list[str], images: list[list] | None = None) -> torch.Tensor:
        """The U-Net condition for interleaved prompts: AlignerNet(MLLM states)."""
        source, mask = mllm_states(self.vlm, prompts, images)
        return self.aligner(source, mask)

    def _sample(self, cond: torch.Tensor, steps: int, guidance: float, seed: int, size: int | None) -> list:
        return to_images(self.decoder.sample(cond, self.empty, steps=steps, guidance=guidance, seed=seed), size)

    @torch.no_grad()
    def _batched(self, conditions, n: int, steps: int, guidance: float, seed: int, size: int | None,
                 batch_size: int) -> list:
        """Sample ``n`` images in batches; ``conditions(start, stop)`` gives the U-Net condition of that slice."""
        out = []
        for k in range(0, n, batch_size):
            out += self._sample(conditions(k, min(n, k + batch_size)), steps, guidance, seed + k, size)
        return out

    def generate(self, prompts: list[str], images: list[list] | None = None, steps: int = 25, guidance: float = 3.0,
                 seed: int = 0, size: int | None = None, batch_size: int = 32) -> list:
        """PIL images for interleaved prompts; ``images[i]`` fills prompt i's ``<image>`` placeholders in order."""
        images = images if images is not None else [[] for _ in prompts]
        return self._batched(lambda a, b: self.condition(prompts[a:b], images[a:b]), len(prompts), steps, guidance,
                             seed, size, batch_size)

    def generate_from_text(self, texts: list[str], steps: int = 25, guidance: float = 3.0, seed: int = 0,
                           size: int | None = None, batch_size: int = 32) -> list:
        """The same U-Net under its original condition, the CLIP text encoder (no images can be given)."""
        return self._batched(lambda a, b: clip_text_condition(self.clip, self.clip_tokenizer, texts[a:b],
                                                              self.aligner.target_length)[0],
                             len(texts), steps, guidance, seed, size, batch_size)

    # -- storage ------------------------------------------------------------------------------------
    def save(self, path: str | Path, info: dict | None = None) -> Path:
        from safetensors.torch import save_file
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.clip.save_pretrained(path / "clip")
        self.clip_tokenizer.save_pretrained(path / "clip")
        self.decoder.save(path / "decoder")
        self.vlm.save(path / "mllm")
        save_file({k: v.contiguous() for k, v in self.aligner.state_dict().items()}, path / "aligner.safetensors")
        (path / CONFIG).write_text(json.dumps({"aligner": self.aligner.config, **(info or {})}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, lm=None, device=None) -> "KosmosG":
        """A model saved by :meth:`save` (``lm``: reuse an already loaded copy of the LM named in mllm/vlm.json), every
        part on ``device`` (auto/None: a GPU when torch sees one, else the CPU; :func:`tenfold.devices.resolve_device`).
        The MLLM's LM is bfloat16 on every device, as it was trained."""
        from tenfold.devices import resolve_device
        from safetensors.torch import load_file
        from transformers import AutoTokenizer, CLIPModel
        from transformers.utils import logging as hf_logging

        from tenfold.vision.vlm import VisionLanguageModel

        hf_logging.disable_progress_bar()
        path = Path(path)
        if not (path / CONFIG).exists():
            raise TenfoldError(f"no Kosmos-G model in {path} (expected {CONFIG}; train one with "
                               "`tenfold kosmos-g train --out DIR`)")
        cfg = json.loads((path / CONFIG).read_text())
        device = resolve_device(device)
        try:
            clip = CLIPModel.from_pretrained(path / "clip").eval().to(device)
            tok = AutoTokenizer.from_pretrained(path / "clip")
        except (OSError, ValueError) as exc:
            raise TenfoldError(f"cannot load the CLIP model in {path / 'clip'}: {str(exc).splitlines()[0]}") from None
        decoder = TextConditionedDecoder.load(path / "decoder", device=device)
        vlm = VisionLanguageModel.load(path / "mllm", lm=lm, lm_dtype=torch.bfloat16, device=device)
        aligner = AlignerNet(**cfg["aligner"])
        aligner.load_state_dict(load_file(path / "aligner.safetensors"))
        return cls(clip, tok, decoder, vlm, aligner.to(device).eval())

    @staticmethod
    def info(path: str | Path) -> dict:
        path = Path(path) / CONFIG
        return json.loads(path.read_text()) if path.exists() else {}
