"""The image decoder Kosmos-G aligns to (Pan et al. 2023, Sec. 2-3): a text-conditioned diffusion U-Net.

Kosmos-G keeps Stable Diffusion's U-Net frozen and swaps its CLIP text encoder for the aligned MLLM. Here the U-Net
is diffusers' ``UNet2DConditionModel`` with a small config, trained once on the procedural world in pixel space
(no VAE), conditioned on the small CLIP's text-encoder output sequence (``last_hidden_state`` of the caption padded
to a fixed length). As in Stable Diffusion, the U-Net attends to every position, padding included, so a module that
outputs that fixed-length sequence (AlignerNet) is a drop-in condition. Training is the DDPM objective (the U-Net
predicts the noise as SD v1.5 does, the clean image, or the velocity: ``prediction_type``; the clean image gives
usable samples after far fewer steps on this flat-coloured world) with the condition dropped (replaced by the
empty caption's encoding) for a fraction of examples, so sampling can use classifier-free guidance; sampling uses
DDIM. With real weights the same class takes SD's U-Net and VAE (``vae=``: latents are encoded / decoded through
it).
"""
from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import torch

from tenfold.errors import TenfoldError

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")  # what the U-Net predicts (SD v1.5: epsilon)
COND_LENGTH = 32  # tokens of CLIP text conditioning (captions of the world are shorter)


def small_unet(cond_dim: int = 128, image_size: int = 32, channels=(32, 64, 96), in_channels: int = 3, seed: int = 0):
    """A small U-Net (pixel space with 3 channels, or a VAE's latents) with cross-attention in its two lower levels."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=image_size, in_channels=in_channels, out_channels=in_channels, block_out_channels=tuple(channels), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=cond_dim,
        attention_head_dim=8, norm_num_groups=16)


class TextConditionedDecoder:
    """Noise-prediction training and classifier-free-guided DDIM sampling around a conditional U-Net."""

    def __init__(self, unet, image_size: int | None = None, vae=None, train_timesteps: int = 1000,
                 prediction_type: str = "epsilon"):
        from diffusers import DDIMScheduler, DDPMScheduler

        if prediction_type not in PREDICTION_TYPES:
            raise TenfoldError(f"unknown prediction type {prediction_type!r}; choose from: {', '.join(PREDICTION_TYPES)}")
        self.unet, self.vae = unet, vae
        self.image_size = image_size or unet.config.sample_size * (8 if vae is not None else 1)
        self.prediction_type = prediction_type
        self.train_scheduler = DDPMScheduler(num_train_timesteps=train_timesteps, beta_schedule="squaredcos_cap_v2",
                                             prediction_type=prediction_type)
        self.sample_scheduler = DDIMScheduler.from_config(self.train_scheduler.config)
        self.cond_dim = unet.config.cross_attention_dim

    # -- storage ------------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """The U-Net (diffusers format) and ``decoder.json`` (prediction type, image size); no VAE."""
        if self.vae is not None:
            raise TenfoldError("saving a decoder with a VAE is not supported; save the VAE with diffusers")
        path = Path(path)
        self.unet.save_pretrained(path / "unet")
        (path / "decoder.json").write_text(json.dumps({"prediction_type": self.prediction_type,
                                                       "image_size": self.image_size,
                                                       "train_timesteps": self.train_scheduler.config.num_train_timesteps}))
        return path

    @classmethod
    def load(cls, path, device=None) -> "TextConditionedDecoder":
        """A decoder saved by :meth:`save`, its U-Net on ``device`` (:func:`tenfold.devices.resolve_device`)."""
        from diffusers import UNet2DConditionModel

        from tenfold.devices import resolve_device

        path = Path(path)
        if not (path / "decoder.json").exists():
            raise TenfoldError(f"no image decoder in {path} (expected decoder.json and unet/)")
        cfg = json.loads((path / "decoder.json").read_text())
        unet = UNet2DConditionModel.from_pretrained(path / "unet").eval().to(resolve_device(device))
        return cls(unet, cfg["image_size"], train_timesteps=cfg["train_timesteps"],
                   prediction_type=cfg["prediction_type"])

    # -- pixels <-> model space -----------------------------------------------------------------
    def to_model_space(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return pixels
        return self.vae.encode(pixels).latent_dist.sample() * self.vae.config.scaling_factor

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return x
        return self.vae.decode(x / self.vae.config.scaling_factor).sample

    def check_condition(self, cond: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if cond.ndim != 3 or cond.shape[-1] != self.cond_dim:
            raise TenfoldError(f"the condition must be (batch, tokens, {self.cond_dim}); got {tuple(cond.shape)}")
        if not torch.isfinite(cond).all():
            raise TenfoldError("the condition holds NaN or infinite values")
        if mask is not None and mask.shape != cond.shape[:2]:
            raise TenfoldError(f"the condition mask must be {tuple(cond.shape[:2])}; got {tuple(mask.shape)}")

    # -- training ----------------------------------------------------------------------------------
    def loss(self, pixels: torch.Tensor, cond: torch.Tensor, mask: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
        """MSE of the U-Net's prediction (noise, clean image or velocity, by ``prediction_type``) at uniformly drawn
        timesteps; gradients reach ``cond`` as well as the U-Net."""
        self.check_condition(cond, mask)
        x0 = self.to_model_space(pixels)
        # drawn with the (CPU, checkpointed) generator, then moved to where the U-Net runs
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, self.train_scheduler.config.num_train_timesteps, (x0.shape[0],),
                          generator=generator).to(x0.device)
        noisy = self.train_scheduler.add_noise(x0, noise, t)
        pred = self.unet(noisy, t, encoder_hidden_states=cond, encoder_attention_mask=mask).sample
        if self.prediction_type == "sample":
            goal = x0
        elif self.prediction_type == "v_prediction":
            goal = self.train_scheduler.get_velocity(x0, noise, t)
        else:
            goal = noise
        return torch.nn.functional.mse_loss(pred, goal)

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, cond: torch.Tensor, uncond: torch.Tensor, mask: torch.Tensor | None = None,
               uncond_mask: torch.Tensor | None = None, steps: int = 25, guidance: float = 3.0,
               seed: int = 0) -> torch.Tensor:
        """Images (B, 3, H, W) in [-1, 1]; ``uncond`` (1 or B rows) is the empty condition for guidance."""
        self.check_condition(cond, mask)
        self.check_condition(uncond, uncond_mask)
        if steps < 1 or not np.isfinite(guidance) or guidance < 0:
            raise TenfoldError("steps must be >= 1 and guidance a number >= 0")
        b = cond.shape[0]
        uncond = uncond.expand(b, -1, -1) if uncond.shape[0] == 1 else uncond
        if uncond_mask is not None and uncond_mask.shape[0] == 1:
            uncond_mask = uncond_mask.expand(b, -1)
        if uncond.shape[1] != cond.shape[1]:
            raise TenfoldError("the condition and the empty condition must have the same number of tokens")
        both = torch.cat([uncond, cond])
        both_mask = None
        if mask is not None or uncond_mask is not None:
            ones = torch.ones(b, cond.shape[1], dtype=torch.long, device=cond.device)
            both_mask = torch.cat([ones if uncond_mask is None else uncond_mask, ones if mask is None else mask])
        side = self.unet.config.sample_size
        g = torch.Generator().manual_seed(seed)
        # drawn on the CPU with the seeded CPU generator (the same start noise on every device), then moved
        x = torch.randn((b, self.unet.config.in_channels, side, side), generator=g).to(self.unet.device)
        scheduler = self.sample_scheduler
        scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            eps = self.unet(torch.cat([x, x]), t, encoder_hidden_states=both, encoder_attention_mask=both_mask).sample
            e_u, e_c = eps.chunk(2)
            x = scheduler.step(e_u + guidance * (e_c - e_u), t, x).prev_sample
        return self.to_pixels(x).clamp(-1, 1)


def to_images(pixels: torch.Tensor, size: int | None = None) -> list:
    """(B, 3, H, W) in [-1, 1] -> PIL images (optionally resized with nearest neighbour)."""
    from PIL import Image

    arr = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    out = [Image.fromarray(a) for a in arr]
    return [im.resize((size, size), Image.NEAREST) for im in out] if size else out


@torch.no_grad()
def clip_text_condition(clip_model, tokenizer, texts: list[str], length: int = COND_LENGTH):
    """The CLIP text encoder's output sequence, padded / cut to ``length`` tokens, and its attention mask."""
    enc = tokenizer(list(texts), padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    enc = enc.to(clip_model.device)  # the tokenizer's tensors go where the CLIP model runs
    hidden = clip_model.text_model(input_ids=enc.input_ids, attention_mask=enc.attention_mask).last_hidden_state
    return hidden, enc.attention_mask


def train_decoder(decoder: TextConditionedDecoder, clip_model, tokenizer, steps: int = 1000, batch_size: int = 32,
                  lr: float = 1e-3, p_uncond: float = 0.1, seed: int = 0, max_objects: int = 4,
                  background: str | None = None, scene_source=None, progress=None, run_dir=None, resume: bool = False,
                  checkpoint_every: int = 0) -> list[float]:
    """Train the U-Net on fresh training scenes (one caption each), the CLIP text encoder frozen; the loss per step.

    ``max_objects`` / ``background`` narrow the world's scenes (e.g. to one or two objects on black);
    ``scene_source(n, seed)`` replaces them with scenes of the caller's (e.g. a mixture with Kosmos-G's targets).
    Runs on the shared loop (:func:`tenfold.models.finetune.train_steps`): with ``run_dir`` it checkpoints every
    ``checkpoint_every`` steps and ``resume`` continues exactly (scenes come from the step; the caption and noise
    generators' states are checkpointed). Under ``accelerate launch`` each process renders and denoises its rows of
    the batch. Raises TenfoldError for steps or batch size < 1, p_uncond outside [0, 1), an unknown background."""
    from tenfold.models.finetune import Forward, GeneratorState, adamw_cosine, my_rows, train_steps
    from tenfold.vision.clip import pixels as to_pixels
    from tenfold.vision.world import BACKGROUNDS, Scene, render, scenes

    if steps < 1 or batch_size < 1 or not 0 <= p_uncond < 1:
        raise TenfoldError("steps and batch size must be >= 1 and p_uncond in [0, 1)")
    if background is not None and background not in BACKGROUNDS:
        raise TenfoldError(f"unknown background {background!r}; choose from: {', '.join(BACKGROUNDS)}")
    unet = decoder.unet
    opt, sched = adamw_cosine(unet.parameters(), lr, steps, warmup=steps // 20)  # no warm-up under 20 steps
    rng = np.random.default_rng(seed)
    g = torch.Generator().manual_seed(seed)
    source = scene_source or partial(scenes, split="train", max_objects=max_objects)

    def batch_for_step(step: int):
        batch = source(batch_size, seed=7 + seed * 100_003 + step)
        if background:
            batch = [Scene(s.objects, background, s.seed) for s in batch]
        caps = [s.captions()[rng.integers(len(s.captions()))] if rng.random() >= p_uncond else "" for s in batch]
        mine, share = my_rows(len(batch))  # every process draws the captions of all rows, then takes its own
        batch, caps = batch[mine], caps[mine]
        cond, _ = clip_text_condition(clip_model, tokenizer, caps)
        return to_pixels([render(s, decoder.image_size) for s in batch], decoder.image_size), cond, share

    def loss_of(denoise, batch) -> torch.Tensor:
        images, cond, share = batch
        return denoise(images, cond, generator=g) * share

    return train_steps(Forward(decoder.loss, unet), opt, batch_for_step, loss_of, steps=steps, schedule=sched,
                       clip=1.0, run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every,
                       progress=progress, generators=[GeneratorState(rng), GeneratorState(g)])
