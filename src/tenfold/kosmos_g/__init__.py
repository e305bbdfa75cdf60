"""Kosmos-G in miniature (Pan et al. 2023): a conditional diffusion decoder and AlignerNet, on the visual world.

Landed so far: the decoder (``TextConditionedDecoder`` around diffusers' ``UNet2DConditionModel``, CFG + DDIM) and
``AlignerNet`` (MLLM states -> CLIP text-conditioning space, with reconstruction); ``mllm_states`` runs the small
VLM over interleaved prompts; ``tasks`` (compositional instructions with world-rendered targets) and ``training``
(align stage, instruction tuning through the frozen U-Net, generation). Still to come: the CLI and the experiment.
"""
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition, small_unet, to_images, train_decoder
from tenfold.kosmos_g.tasks import TASKS, Instruction, instructions
from tenfold.kosmos_g.training import align_stage, generate, instruct_stage

__all__ = ["TASKS", "AlignerNet", "Instruction", "TextConditionedDecoder", "align_stage", "clip_text_condition",
           "generate", "instruct_stage", "instructions", "mllm_states", "small_unet", "to_images", "train_decoder"]
