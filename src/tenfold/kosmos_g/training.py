"""Kosmos-G's training stages after the decoder exists (Pan et al. 2023, Sec. 2.3-2.4), and generation.

``align``: captions only; the MLLM (the small VLM, frozen) reads a caption, AlignerNet maps its states to the CLIP
text space: MSE to the CLIP text encoder's output on the same caption + reconstruction. ``instruct``: compositional
instructions with subject images; the condition is AlignerNet(MLLM(interleaved input)) and the loss is the diffusion
loss of the target image through the frozen U-Net, so only the aligner learns. ``generate``: the aligned MLLM
replaces the CLIP text encoder as the U-Net's condition (classifier-free guidance against the empty caption).
"""
from __future__ import annotations

import torch

from tenfold.errors import TenfoldError
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition
from tenfold.kosmos_g.tasks import TASKS, caption_pairs, instructions


def _optimiser(aligner: AlignerNet, lr: float, steps: int):
    from transformers import get_cosine_schedule_with_warmup

    if steps < 1 or not lr > 0:
        raise TenfoldError("steps must be >= 1 and the learning rate > 0")
    opt = torch.optim.AdamW(aligner.parameters(), lr=lr, weight_decay=0.01)
    return opt, get_cosine_schedule_with_warmup(opt, max(1, steps // 20), steps)


def _step(aligner, opt, sched, loss) -> float:
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(aligner.parameters(), 1.0)
    opt.step()
    sched.step()
    return round(loss.item(), 5)


def align_stage(aligner: AlignerNet, vlm, clip_model, tokenizer, steps: int = 300, batch_size: int = 32,
                lr: float = 3e-4, rec_weight: float = 1.0, seed: int = 0, progress=None) -> list[dict]:
    """Train the aligner on captions: MSE to CLIP's text states + ``rec_weight`` x reconstruction."""
    opt, sched = _optimiser(aligner, lr, steps)
    history = []
    aligner.train()
    for step in range(steps):
        caps = caption_pairs(batch_size, seed=seed * 100_003 + step)
        with torch.no_grad():
            source, mask = mllm_states(vlm, caps)
            target, _ = clip_text_condition(clip_model, tokenizer, caps)
        with torch.enable_grad():
            out = aligner.align_losses(source, mask, target)
            total = _step(aligner, opt, sched, out["mse"] + rec_weight * out["rec"])
        history.append({"mse": round(out["mse"].item(), 5), "rec": round(out["rec"].item(), 5), "total": total})
        if progress:
            progress(step + 1, steps, total)
    aligner.eval()
    return history


def instruct_stage(aligner: AlignerNet, vlm, decoder: TextConditionedDecoder, steps: int = 300,
                   batch_size: int = 16, lr: float = 1e-4, tasks=TASKS, seed: int = 0, progress=None) -> list[float]:
    """Compositional instruction tuning: diffusion loss through the frozen U-Net, gradients into the aligner only."""
    from tenfold.vision.clip import pixels

    decoder.unet.requires_grad_(False)
    opt, sched = _optimiser(aligner, lr, steps)
    g = torch.Generator().manual_seed(seed)
    losses = []
    aligner.train()
    for step in range(steps):
        batch = instructions(batch_size, "train", tasks, seed=seed * 100_003 + step)
        with torch.no_grad():
            source, mask = mllm_states(vlm, [i.prompt for i in batch], [i.subject_images() for i in batch])
        target = pixels([i.target_image(decoder.image_size) for i in batch], decoder.image_size)
        with torch.enable_grad():
            losses.append(_step(aligner, opt, sched, decoder.loss(target, aligner(source, mask), generator=g)))
        if progress:
            progress(step + 1, steps, losses[-1])
    aligner.eval()
    return losses


@torch.no_grad()
def generate(aligner: AlignerNet, vlm, decoder: TextConditionedDecoder, empty_condition: torch.Tensor,
             prompts: list[str], images: list[list] | None = None, steps: int = 25, guidance: float = 3.0,
             seed: int = 0) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] for interleaved prompts; ``empty_condition``: CLIP's encoding of ""."""
    source, mask = mllm_states(vlm, prompts, images)
    return decoder.sample(aligner(source, mask), empty_condition, steps=steps, guidance=guidance, seed=seed)
