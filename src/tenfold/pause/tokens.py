"""The ``<pause>`` token (Goyal et al. 2023, Sec. 3): a learnable token added to any causal LM's vocabulary.

``add_pause_token`` registers ``<pause>`` as a special token, resizes the input (and tied output)
embeddings through transformers' public ``resize_token_embeddings`` and starts the new row at the
mean of the existing embeddings (a neutral start, as new-token embeddings usually are).
``insert_pauses`` is the pause-pretraining transform: ``round(rate * length)`` pauses at uniformly
random positions, then the sequence is trimmed back to its length.
"""
from __future__ import annotations

import numpy as np
import torch

from tenfold.errors import TenfoldError

PAUSE = "<pause>"


def pause_id(tokenizer) -> int:
    ids = tokenizer.convert_tokens_to_ids(PAUSE)
    if ids is None or ids == tokenizer.unk_token_id or ids >= len(tokenizer):
        raise TenfoldError(f"the tokenizer has no {PAUSE} token; call tenfold.pause.add_pause_token(model, tokenizer)")
    return int(ids)


def add_pause_token(model, tokenizer) -> int:
    """Add ``<pause>`` to ``tokenizer`` and ``model`` (idempotent); return its id."""
    if PAUSE not in tokenizer.get_vocab():
        tokenizer.add_tokens([PAUSE], special_tokens=True)
    pid = pause_id(tokenizer)
    emb = model.get_input_embeddings()
    if emb.weight.shape[0] <= pid:
        old = emb.weight.shape[0]
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            weight = model.get_input_embeddings().weight
            weight[old:] = weight[:old].mean(0, keepdim=True)
            out = model.get_output_embeddings()
            if out is not None and out.weight.data_ptr() != weight.data_ptr():
                out.weight[old:] = out.weight[:old].mean(0, keepdim=True)
    return pid


def insert_pauses(ids: list[int], pause: int, rate: float = 0.1, rng: np.random.Generator | None = None) -> list[int]:
    """Insert ``round(rate * len(ids))`` pauses at uniformly random positions, then trim to ``len(ids)``."""
    if not 0 <= rate < 1:
        raise TenfoldError(f"the pause rate must be in [0, 1) (got {rate})")
    rng = rng or np.random.default_rng()
    n, m = len(ids), int(round(rate * len(ids)))
    if m == 0:
        return list(ids)
    slots = np.zeros(n + m, dtype=bool)
    slots[rng.choice(n + m, size=m, replace=False)] = True  # which positions of the longer sequence are pauses
    out, it = [], iter(ids)
    for is_pause in slots:
        out.append(pause if is_pause else next(it))
    return out[:n]
