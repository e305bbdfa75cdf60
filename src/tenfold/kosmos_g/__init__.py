"""Kosmos-G in miniature (Pan et al. 2023): a conditional diffusion decoder and AlignerNet, on the visual world.

``decoder``: ``TextConditionedDecoder`` around diffusers' ``UNet2DConditionModel`` (CFG + DDIM); ``aligner``:
``AlignerNet`` (MLLM states -> CLIP text-conditioning space, with reconstruction) and ``mllm_states`` (the small VLM
over interleaved prompts); ``tasks``: compositional instructions with world-rendered targets; ``training``: the align
stage and instruction tuning through the frozen U-Net; ``pipeline``: the cached foundation and both stages;
``model``: ``KosmosG`` (generate, save, load); ``scoring`` / ``evaluate``: parser accuracy, CLIP-I / CLIP-T and the
baselines; ``cli``: ``tenfold kosmos-g train|generate``; ``experiment``: ``kosmos-g``.
"""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.kosmos_g` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "aligner": ["AlignerNet", "mllm_states"],
    "decoder": ["TextConditionedDecoder", "clip_text_condition", "small_unet", "to_images", "train_decoder"],
    "tasks": ["TASKS", "Instruction", "instructions"],
    "model": ["KosmosG"],
    "training": ["align_stage", "generate", "instruct_stage"],
})
