"""Pause tokens (Goyal et al. 2023): pause-pretraining, pause-finetuning and pause inference for causal LMs."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.pause` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "collators": ["IGNORE", "PauseFinetuneCollator", "PausePretrainCollator"],
    "evaluate": ["accuracy", "predict"],
    "inference": ["SuppressPause", "generate_after_pauses"],
    "tokens": ["PAUSE", "add_pause_token", "insert_pauses", "pause_id"],
    "training": ["TrainConfig", "encode_pairs", "load_checkpoint", "save_checkpoint", "small_llama", "train"],
})
