"""Kosmos-G in miniature (Pan et al. 2023): a conditional diffusion decoder and AlignerNet, on the visual world.

Landed so far: the decoder (``TextConditionedDecoder`` around diffusers' ``UNet2DConditionModel``, CFG + DDIM) and
``AlignerNet`` (MLLM states -> CLIP text-conditioning space, with reconstruction); ``mllm_states`` runs the small
VLM over interleaved prompts. Still to come: compositional instruction tuning, the CLI and the experiment.
"""
from tenfold.kosmos_g.aligner import AlignerNet, mllm_states
from tenfold.kosmos_g.decoder import TextConditionedDecoder, clip_text_condition, small_unet, to_images, train_decoder

__all__ = ["AlignerNet", "TextConditionedDecoder", "clip_text_condition", "mllm_states", "small_unet", "to_images",
           "train_decoder"]
