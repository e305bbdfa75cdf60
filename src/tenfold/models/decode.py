"""Loading a language model for decoding, by the ``--dtype`` names the chat, serve and generate verbs share.

Kept free of heavy imports at module level: the CLI builds every parser from :data:`DECODE_DTYPES` at start-up.
"""
from __future__ import annotations

DTYPES = ("float32", "float16", "bfloat16", "int4")  # int4: int4 linear weights, the rest float32 (CPU)
DECODE_DTYPES = ("auto", *DTYPES)  # auto: int4 for the bundled model on CPU, float32 for any other model
DECODE_DTYPE_HELP = ("weights and activations (default auto: on the CPU, int4 linear weights with the rest float32 for "
                     "the bundled model, about 2x faster at the same perplexity, and float32 for a model given with "
                     "--model; bfloat16 on a GPU; int4 is CPU-only)")


def load_for_decoding(model_name: str | None, dtype: str, device=None):
    """``(model, tokenizer)`` for a ``dtype`` name of :data:`DECODE_DTYPES` on ``device`` (a ``--device`` value).

    See :func:`tenfold.models.load_lm`; TenfoldError for a GPU torch does not see, or int4 off the CPU.
    """
    import torch

    from tenfold.devices import resolve_device
    from tenfold.models.lm import load_lm

    device = resolve_device(device)
    if dtype == "auto":
        return load_lm(model_name, quantize="auto", device=device)
    if dtype == "int4":
        return load_lm(model_name, quantize="int4", device=device)
    return load_lm(model_name, dtype=getattr(torch, dtype), quantize=None, device=device)
