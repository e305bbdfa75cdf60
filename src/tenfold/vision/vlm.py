"""A small vision-language model: a CLIP image encoder, a projector, and a causal LM (LLaVA's recipe, Liu et al.
2023, which the seed week's multimodal systems - Kosmos-G's MLLM, GPT-4V-style assistants - share).

Each ``<image>`` placeholder in a chat message becomes ``image_tokens`` positions in the LM's input. The image
goes through the CLIP vision transformer; its penultimate-layer patch features are average-pooled to a
``g x g`` grid (``image_tokens = g * g``) and mapped by a two-layer MLP projector into the LM's embedding space,
replacing the placeholder positions' embeddings. The LM stays frozen (and may be held in bfloat16, which halves
CPU time; the projector and vision tower stay float32) (only the projector, and by default the small
vision tower, are trained), so the saved model refers to the LM by name instead of copying its weights; with
``lora_rank`` > 0, LoRA adapters on the LM's attention are trained too and saved beside the projector.
Images are matched to placeholders in order; a count mismatch is a clear error.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tenfold.errors import TenfoldError
from tenfold.models.finetune import IGNORE
from tenfold.vision.clip import pixels

IMAGE_TOKEN = "<image>"
SYSTEM = "You are a visual assistant."


@dataclass
class VLMOutput:
    loss: torch.Tensor | None
    logits: torch.Tensor | None = None


def vision_tower(clip_model):
    """A ``CLIPVisionModel`` carrying the vision half of a ``CLIPModel`` (its weights, copied)."""
    from transformers import CLIPVisionModel

    tower = CLIPVisionModel(clip_model.config.vision_config)
    tower.load_state_dict(clip_model.vision_model.state_dict())
    return tower


class VisionLanguageModel(nn.Module):
    def __init__(self, lm, tokenizer, vision, image_tokens: int = 16, lm_name: str | None = None,
                 system: str = SYSTEM, lora_rank: int = 0):
        super().__init__()
        grid = math.isqrt(image_tokens)
        if grid * grid != image_tokens or image_tokens < 1:
            raise TenfoldError(f"image_tokens must be a square number (1, 4, 9, 16, ...), got {image_tokens}")
        self.lm, self.vision, self.tokenizer = lm, vision, tokenizer
        self.image_tokens, self.grid, self.lm_name, self.system = image_tokens, grid, lm_name, system
        self.image_size = vision.config.image_size
        if IMAGE_TOKEN not in tokenizer.get_vocab():  # on a copy: the caller's tokenizer is left as it was
            tokenizer = copy.deepcopy(tokenizer)
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
            self.tokenizer = tokenizer
        self.image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        width, d = vision.config.hidden_size, lm.config.hidden_size
        # the last RMSNorm holds image tokens at the scale of the LM's own token embeddings (without it their norm
        # had grown to ~10x that scale after 300 training steps)
        self.projector = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, d), nn.GELU(), nn.Linear(d, d),
                                       nn.RMSNorm(d))
        with torch.no_grad():
            self.projector[-1].weight.fill_(lm.get_input_embeddings().weight.float().pow(2).mean().sqrt().item())
        self.lm.requires_grad_(False)
        self.lora_rank = lora_rank
        if lora_rank:
            self._add_lora(lora_rank)

    def _add_lora(self, rank: int) -> None:
        """LoRA adapters (float32) on the LM's attention projections, injected in place (peft)."""
        from peft import LoraConfig, inject_adapter_in_model

        if rank < 1:
            raise TenfoldError(f"the LoRA rank must be >= 1 (got {rank})")
        config = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0,
                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
        inject_adapter_in_model(config, self.lm)
        for name, param in self.lm.named_parameters():
            if "lora_" in name:
                param.data = param.data.float()
                param.requires_grad_(True)

    # -- images ------------------------------------------------------------------------------
    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, image_tokens, lm hidden size)."""
        pixel_values = pixel_values.to(self.vision.device, self.vision.dtype)  # inputs go to the vision tower's device
        hidden = self.vision(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-2][:, 1:]
        n, p, w = hidden.shape
        side = math.isqrt(p)
        grid = hidden.transpose(1, 2).reshape(n, w, side, side)
        pooled = nn.functional.adaptive_avg_pool2d(grid, self.grid).flatten(2).transpose(1, 2)
        return self.projector(pooled)

    def pixel_values(self, images) -> torch.Tensor:
        return pixels(images, self.image_size)

    # -- text ----------------------------------------------------------------------------------
    def prompt_ids(self, messages: list[dict], add_generation_prompt: bool = True) -> list[int]:
        """Chat-template ids with every ``<image>`` expanded to ``image_tokens`` placeholder ids.

        A conversation without a system message gets :data:`SYSTEM` (the one the model was trained with).
        """
        from tenfold.models.lm import chat_ids

        if not messages or messages[0].get("role") != "system":
            messages = [{"role": "system", "content": self.system}] + list(messages)
        ids = chat_ids(self.tokenizer, messages, add_generation_prompt)[0].tolist()
        return self.expand(ids)

    def expand(self, ids: list[int]) -> list[int]:
        out = []
        for t in ids:
            out.extend([t] * self.image_tokens if t == self.image_token_id else [t])
        return out

    def count_images(self, ids) -> int:
        return sum(1 for t in ids if t == self.image_token_id) // self.image_tokens

    def embed(self, input_ids: torch.Tensor, image_embeds: torch.Tensor | None) -> torch.Tensor:
        """LM input embeddings with the placeholder positions filled by ``image_embeds`` (row-major order)."""
        mask = input_ids == self.image_token_id
        safe = input_ids.masked_fill(mask, 0)
        embeds = self.lm.get_input_embeddings()(safe)
        n_slots = int(mask.sum())
        have = 0 if image_embeds is None else image_embeds.shape[0] * image_embeds.shape[1]
        if n_slots != have:
            raise TenfoldError(f"the prompt has {n_slots // self.image_tokens} {IMAGE_TOKEN} placeholder(s) but "
                               f"{have // self.image_tokens} image(s) were given")
        if n_slots:
            embeds = embeds.masked_scatter(mask[..., None], image_embeds.reshape(-1, embeds.shape[-1]).to(embeds.dtype))
        return embeds

    # -- training --------------------------------------------------------------------------------
    def forward(self, input_ids, attention_mask, pixel_values=None, labels=None):
        """Mean over examples of each example's mean token loss on its labelled positions (so one-word answers weigh as
        much as long captions); the LM head runs on the labelled rows only, not the whole sequence."""
        images = None
        if pixel_values is not None:
            pv = pixel_values.flatten(0, 1) if pixel_values.ndim == 5 else pixel_values
            images = self.encode_images(pv)
        embeds = self.embed(input_ids, images)
        hidden = self.lm.model(inputs_embeds=embeds, attention_mask=attention_mask).last_hidden_state
        if labels is None:
            return VLMOutput(None, self.lm.lm_head(hidden).float())
        target = labels[:, 1:]
        keep = target != IGNORE
        logits = self.lm.lm_head(hidden[:, :-1][keep])
        token_loss = nn.functional.cross_entropy(logits.float(), target[keep], reduction="none")
        row = keep.nonzero()[:, 0]
        per_example = torch.zeros(keep.shape[0], device=token_loss.device).index_add_(0, row, token_loss) / keep.sum(1).clamp(min=1)
        return VLMOutput(per_example[keep.any(1)].mean())

    # -- inference --------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, prompts: list[list[int]], images: list[list], max_new_tokens: int = 8) -> list[str]:
        """Greedy answers for prompts (ids from :meth:`prompt_ids`) with their images (PIL, one list per prompt)."""
        if len(prompts) != len(images):
            raise TenfoldError("one list of images per prompt")
        pad = self.tokenizer.pad_token_id
        width = max(map(len, prompts))
        device = self.lm.device
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)  # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
        flat = [im for ims in images for im in ims]
        image_embeds = self.encode_images(self.pixel_values(flat)) if flat else None
        embeds = self.embed(ids, image_embeds)
        out = self.lm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=max_new_tokens,
                               do_sample=False, pad_token_id=pad)
        return [t.strip() for t in self.tokenizer.batch_decode(out, skip_special_tokens=True)]

    def ask(self, images: list, question: str, max_new_tokens: int = 32) -> str:
        """One question about one or more images (``<image>`` placeholders are prepended when the text has none)."""
        text = question if IMAGE_TOKEN in question else "".join(f"{IMAGE_TOKEN}\n" for _ in images) + question
        ids = self.prompt_ids([{"role": "user", "content": text}])
        return self.generate([ids], [list(images)], max_new_tokens)[0]  # a count mismatch fails in embed()

    # -- files ----------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Vision tower, projector, tokenizer and ``vlm.json`` (the LM is referred to by name: it was frozen)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.vision.save_pretrained(path / "vision")
        save_file({k: v.contiguous() for k, v in self.projector.state_dict().items()}, path / "projector.safetensors")
        if self.lora_rank:
            from peft import get_peft_model_state_dict

            save_file({k: v.contiguous() for k, v in get_peft_model_state_dict(self.lm).items()},
                      path / "lora.safetensors")
        self.tokenizer.save_pretrained(path / "tokenizer")
        (path / "vlm.json").write_text(json.dumps({"lm": self.lm_name, "image_tokens": self.image_tokens,
                                                   "system": self.system, "lora_rank": self.lora_rank}, indent=1))
        return path

    @classmethod
    def load(cls, path: str | Path, lm=None, lm_dtype: torch.dtype | None = None, device=None) -> "VisionLanguageModel":
        """A model saved by :meth:`save`; ``lm`` reuses an already loaded LM (it must be the one named in vlm.json).

        ``device``: auto/None (a GPU when torch sees one, else the CPU), cpu, cuda[:N]
        (:func:`tenfold.devices.resolve_device`); the whole model is moved there. ``lm_dtype``: the LM's dtype,
        by default float32 on the CPU and bfloat16 on a GPU."""
        from tenfold.devices import default_dtype, resolve_device

        from safetensors.torch import load_file
        from transformers import AutoTokenizer, CLIPVisionModel

        from tenfold.models.lm import load_lm

        path = Path(path)
        if not (path / "vlm.json").exists():
            raise TenfoldError(f"no vision-language model in {path} (expected vlm.json; train one with "
                               "`tenfold vision train-vlm`)")
        cfg = json.loads((path / "vlm.json").read_text())
        device = resolve_device(device)
        if lm is None:
            lm, _ = load_lm(cfg["lm"], dtype=lm_dtype or default_dtype(device), device=device, quantize=None)
        tok = AutoTokenizer.from_pretrained(path / "tokenizer")
        vlm = cls(lm, tok, CLIPVisionModel.from_pretrained(path / "vision"), cfg["image_tokens"], cfg["lm"],
                  cfg.get("system", SYSTEM), cfg.get("lora_rank", 0))
        vlm.projector.load_state_dict(load_file(path / "projector.safetensors"))
        if vlm.lora_rank:
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(vlm.lm, load_file(path / "lora.safetensors"))
        return vlm.to(device).eval()


def build_vlm(clip_model, lm_name: str | None = None, image_tokens: int = 16, train_vision: bool = True, lm=None,
              tokenizer=None, lm_dtype: torch.dtype = torch.bfloat16, lora_rank: int = 0) -> VisionLanguageModel:
    """A new VLM from a CLIP model (its vision half) and an LM (default: the bundled SmolLM2, frozen in bf16)."""
    from tenfold.models.lm import DEFAULT_LM, load_lm

    lm_name = lm_name or DEFAULT_LM
    if lm is None:
        lm, tokenizer = load_lm(lm_name, dtype=lm_dtype)
    vlm = VisionLanguageModel(lm, tokenizer, vision_tower(clip_model), image_tokens, lm_name, lora_rank=lora_rank)
    vlm.vision.requires_grad_(train_vision)
    return vlm


def training_pairs(vlm: VisionLanguageModel, qs) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, answer ids + end of turn) for each question."""
    end = vlm.tokenizer.eos_token_id
    return [(vlm.prompt_ids([{"role": "user", "content": q.prompt()}]),
             vlm.tokenizer(q.answer, add_special_tokens=False).input_ids + [end]) for q in qs]


def batch_for(vlm: VisionLanguageModel, qs) -> dict:
    """A training batch: right-padded ids, answer-only labels, one rendered image per row."""
    from tenfold.models.finetune import answer_only_batch
    from tenfold.vision.world import render

    batch = answer_only_batch(training_pairs(vlm, qs), vlm.tokenizer.pad_token_id)
    batch["pixel_values"] = vlm.pixel_values([render(q.scene, vlm.image_size) for q in qs])
    return batch


def train_vlm(vlm: VisionLanguageModel, steps: int = 200, batch_size: int = 16, lr: float = 1e-3,
              kinds=("colour", "shape", "count", "position", "caption"), seed: int = 0, run_dir=None,
              resume: bool = False, checkpoint_every: int = 0, progress=None, curriculum: float = 0.3) -> list[float]:
    """Instruction tuning on fresh training-split questions each step (kinds in turn); the LM stays frozen.

    The first ``curriculum`` fraction of the steps uses single-object scenes (colour, shape and caption questions):
    there an answer depends on the image alone, not on finding one object among several, and the image pathway
    starts to carry information (on the full mixture from the start, 300 steps left the answers independent of the
    image: the loss with images shuffled across the batch was the same).
    """
    from tenfold.models.finetune import fit
    from tenfold.vision.questions import questions

    if steps < 1 or batch_size < 1 or not 0 <= curriculum <= 1:
        raise TenfoldError("steps and the batch size must be >= 1 and curriculum a fraction in [0, 1]")
    first = [k for k in kinds if k in ("colour", "shape", "caption")]
    warm = int(curriculum * steps) if first else 0

    def batch_for_step(step: int) -> dict:
        if step < warm:
            return batch_for(vlm, questions(batch_size, "train", first, seed=1 + seed * 100_003 + step, max_objects=1))
        return batch_for(vlm, questions(batch_size, "train", kinds, seed=1 + seed * 100_003 + step))

    return fit(vlm, batch_for_step, steps=steps, lr=lr, warmup=0.05, weight_decay=0.0, seed=seed, run_dir=run_dir,
               resume=resume, checkpoint_every=checkpoint_every, progress=progress)

