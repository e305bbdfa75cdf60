"""Pause tokens (Goyal et al. 2023): pause-pretraining, pause-finetuning and pause inference for causal LMs."""
from tenfold.pause.collators import IGNORE, PauseFinetuneCollator, PausePretrainCollator
from tenfold.pause.evaluate import accuracy, predict
from tenfold.pause.inference import SuppressPause, generate_after_pauses
from tenfold.pause.tokens import PAUSE, add_pause_token, insert_pauses, pause_id
from tenfold.pause.training import TrainConfig, encode_pairs, load_checkpoint, save_checkpoint, small_llama, train

__all__ = ["PAUSE", "IGNORE", "add_pause_token", "pause_id", "insert_pauses", "PausePretrainCollator",
           "PauseFinetuneCollator", "SuppressPause", "generate_after_pauses", "predict", "accuracy", "TrainConfig",
           "train", "encode_pairs", "small_llama", "save_checkpoint", "load_checkpoint"]
