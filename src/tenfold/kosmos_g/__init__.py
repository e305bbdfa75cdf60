"""Kosmos-G in miniature (Pan et al. 2023): a conditional diffusion decoder and AlignerNet, on the visual world.

``decoder``: ``TextConditionedDecoder`` around diffusers' ``UNet2DConditionModel`` (CFG + DDIM); ``aligner``:
``AlignerNet`` (MLLM states -> CLIP text-conditioning space, with reconstruction) and ``mllm_states`` (the small VLM
over interleaved prompts); ``tasks``: compositional instructions with world-rendered targets; ``training``: the align
stage and instruction tuning through the frozen U-Net; ``pipeline``: the cached foundation and both stages;
``model``: ``KosmosG`` (generate, save, load); ``scoring`` / ``evaluate``: parser accuracy, CLIP-I / CLIP-T and the
baselines; ``cli``: ``tenfold kosmos-g train|generate``; ``experiment``: ``kosmos-g``.
"""
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition, small_unet, to_images, train_decoder
from tenfold.kosmos_g.tasks import TASKS, Instruction, instructions
from tenfold.kosmos_g.model import KosmosG
from tenfold.kosmos_g.training import align_stage, generate, instruct_stage

__all__ = ["TASKS", "AlignerNet", "KosmosG", "Instruction", "TextConditionedDecoder", "align_stage", "clip_text_condition",
           "generate", "instruct_stage", "instructions", "mllm_states", "small_unet", "to_images", "train_decoder"]
