"""Pause tokens (Goyal et al. 2023): pause-pretraining, pause-finetuning and pause inference for causal LMs."""
from tenfold.pause.collators import IGNORE, PauseFinetuneCollator, PausePretrainCollator
from tenfold.pause.inference import SuppressPause, generate_after_pauses
from tenfold.pause.tokens import PAUSE, add_pause_token, insert_pauses, pause_id

__all__ = ["PAUSE", "IGNORE", "add_pause_token", "pause_id", "insert_pauses", "PausePretrainCollator",
           "PauseFinetuneCollator", "SuppressPause", "generate_after_pauses"]
