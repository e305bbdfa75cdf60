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
from tenfold.kosmos_g.tasks import TASKS, caption_pairs, instructions, target_caption


def _optimiser(params, lr: float, steps: int):
    from tenfold.models.finetune import adamw_cosine

    if steps < 1 or not lr > 0:
        raise TenfoldError("steps must be >= 1 and the learning rate > 0")
    return adamw_cosine(params, lr, steps, warmup=steps // 20)  # no warm-up under 20 steps


def align_stage(aligner: AlignerNet, vlm, clip_model, tokenizer, steps: int = 300, batch_size: int = 32,
                lr: float = 3e-4, rec_weight: float = 1.0, seed: int = 0, progress=None, run_dir=None,
                resume: bool = False, checkpoint_every: int = 0) -> list[dict]:
    """Train the aligner on captions: MSE to CLIP's text states + ``rec_weight`` x reconstruction.

    Returns ``{"mse", "rec", "total"}`` per step. Runs on the shared loop
    (:func:`tenfold.models.finetune.train_steps`; ``run_dir`` / ``resume`` / ``checkpoint_every`` as there): the
    captions come from the step, so a resumed run continues exactly; under ``accelerate launch`` each process
    takes its rows of the batch."""
    from tenfold.models.finetune import Forward, my_rows, train_steps

    opt, sched = _optimiser(list(aligner.parameters()), lr, steps)

    def batch_for_step(step: int):
        caps = caption_pairs(batch_size, seed=seed * 100_003 + step)
        mine, share = my_rows(len(caps))
        with torch.no_grad():
            source, mask = mllm_states(vlm, caps[mine])
            target, _ = clip_text_condition(clip_model, tokenizer, caps[mine])
        return source, mask, target, share

    def loss_of(align, batch):
        source, mask, target, share = batch
        out = align(source, mask, target)
        return (out["mse"] + rec_weight * out["rec"]) * share, {"mse": out["mse"] * share, "rec": out["rec"] * share}

    return train_steps(Forward(aligner.align_losses, aligner), opt, batch_for_step, loss_of, steps=steps,
                       schedule=sched, clip=1.0, run_dir=run_dir, resume=resume,
                       checkpoint_every=checkpoint_every, progress=progress)


def instruct_stage(aligner: AlignerNet, vlm, decoder: TextConditionedDecoder, steps: int = 300,
                   batch_size: int = 16, lr: float = 1e-4, tasks=TASKS, seed: int = 0, progress=None,
                   train_mllm: bool = False, anchor_weight: float = 0.0, clip_model=None,
                   clip_tokenizer=None, run_dir=None, resume: bool = False, checkpoint_every: int = 0) -> list[float]:
    """Compositional instruction tuning: the diffusion loss of the target through the frozen U-Net.

    Gradients reach the aligner, and with ``train_mllm`` also the MLLM's own trainable parts (projector, vision
    tower, LoRA adapters; the LM's weights stay frozen) - Kosmos-G fine-tunes its MLLM in this stage. With
    ``anchor_weight`` > 0, a term not in the paper is added: MSE between the condition and the CLIP text encoder's
    output on the target's caption (``clip_model`` / ``clip_tokenizer``), i.e. language as the anchor for image
    inputs too - a stronger signal than the diffusion loss alone at a miniature's training budget.
    Runs on the shared loop (:func:`tenfold.models.finetune.train_steps`; ``run_dir`` / ``resume`` /
    ``checkpoint_every`` as there; the noise generator's state is checkpointed). Returns the loss per step.
    """
    from tenfold.models.finetune import Forward, GeneratorState, my_rows, train_steps
    from tenfold.vision.clip import pixels

    if anchor_weight < 0 or (anchor_weight and clip_model is None):
        raise TenfoldError("the caption anchor needs anchor_weight >= 0 and the CLIP model and tokenizer")
    decoder.unet.requires_grad_(False)
    params = list(aligner.parameters())
    if train_mllm:
        params += [p for p in vlm.parameters() if p.requires_grad]  # the LM was frozen when the VLM was built
    opt, sched = _optimiser(params, lr, steps)
    g = torch.Generator().manual_seed(seed)

    def batch_for_step(step: int):
        batch = instructions(batch_size, "train", tasks, seed=seed * 100_003 + step)
        mine, share = my_rows(len(batch))
        batch = batch[mine]
        return batch, pixels([i.target_image(decoder.image_size) for i in batch], decoder.image_size), share

    def condition_loss(batch, target) -> torch.Tensor:
        with torch.set_grad_enabled(train_mllm):
            source, mask = mllm_states(vlm, [i.prompt for i in batch], [i.subject_images() for i in batch])
        cond = aligner(source, mask)
        loss = decoder.loss(target, cond, generator=g)
        if anchor_weight:
            with torch.no_grad():
                anchor, _ = clip_text_condition(clip_model, clip_tokenizer, [target_caption(i) for i in batch],
                                                aligner.target_length)
            loss = loss + anchor_weight * torch.nn.functional.mse_loss(cond, anchor)
        return loss

    def loss_of(model, batch) -> torch.Tensor:
        items, target, share = batch
        return model(items, target) * share

    trained = Forward(condition_loss, aligner, *([vlm] if train_mllm else []))
    return train_steps(trained, opt, batch_for_step, loss_of, steps=steps, schedule=sched, clip=1.0,
                       run_dir=run_dir, resume=resume, checkpoint_every=checkpoint_every, progress=progress,
                       generators=[GeneratorState(g)], train_module=aligner)  # the MLLM keeps its mode


@torch.no_grad()
def generate(aligner: AlignerNet, vlm, decoder: TextConditionedDecoder, empty_condition: torch.Tensor,
             prompts: list[str], images: list[list] | None = None, steps: int = 25, guidance: float = 3.0,
             seed: int = 0) -> torch.Tensor:
    """Images (B, 3, H, W) in [-1, 1] for interleaved prompts; ``empty_condition``: CLIP's encoding of ""."""
    source, mask = mllm_states(vlm, prompts, images)
    return decoder.sample(aligner(source, mask), empty_condition, steps=steps, guidance=guidance, seed=seed)
