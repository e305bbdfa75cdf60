"""Continuous batching for the serve engine: one forward pass decodes one token for every active row.

Each row (a choice of a request) keeps its own :class:`~tenfold.streaming.SinkCache`, with its own sinks,
window, fill and positions: the rows of a batch are at different points of different conversations. A
decode step stacks the rows' new tokens into one (B, 1) forward, so the linear layers (most of a step,
see the ``streaming-decode`` profile) run once for all rows; only attention runs per row, against that
row's own cache, so nothing is copied into a padded batch tensor and a row's result is what it would be
alone. Rows join and leave between steps (:class:`~tenfold.serve.engine.Engine` decides which).

Integration uses transformers' public extension points: :class:`RowCaches` is a ``Cache`` whose ``update``
writes each row into its own sink cache, and the attention function tenfold registers for CPU decoding
(``AttentionInterface``, :func:`~tenfold.models.decode_attention.decode_attention_forward`, the default of
``load_lm``) attends per row when the forward carries ``row_caches`` and is SDPA otherwise, so prefill and
every other use of the model are unchanged.
"""
from __future__ import annotations

import torch
from transformers.cache_utils import Cache

from tenfold.models.decode_attention import DECODE_ATTENTION, use_decode_attention
from tenfold.streaming.sink_cache import HeldElsewhereLayer, SinkCache, enable_streaming

ROW_ATTENTION = DECODE_ATTENTION  # the attention implementation that understands ``row_caches``


class RowCaches(Cache):
    """``B`` independent batch-1 sink caches seen by the model as one batch of ``B`` rows (decode steps only)."""

    def __init__(self, caches: list[SinkCache], num_layers: int):
        super().__init__(layers=[HeldElsewhereLayer() for _ in range(num_layers)])
        self.caches = caches
        self.current: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        self.current[layer_idx] = [c.update(key_states[i : i + 1], value_states[i : i + 1], layer_idx)
                                   for i, c in enumerate(self.caches)]
        return key_states, value_states  # attention reads the rows from ``current``


def enable_row_batching(model) -> None:
    """Route ``model``'s attention through :data:`ROW_ATTENTION` (already the default of ``load_lm``; sdpa and
    eager models are switched to it, and their plain calls compute the same as before). Idempotent.

    Raises ValueError for attention implementations other than eager, sdpa and tenfold's CPU decode.
    """
    enable_streaming(model)
    try:
        use_decode_attention(model)
    except ValueError as exc:
        raise ValueError(f"continuous batching: {exc}") from None


@torch.no_grad()
def decode_rows(model, caches: list[SinkCache], tokens: list[int]) -> torch.Tensor:
    """Feed ``tokens[i]`` to the row with cache ``caches[i]``, all in one forward; return (B, V) next-token logits.

    Each cache takes one step exactly as a batch-1 forward would (its own eviction and positions).
    """
    layout = model._tenfold_streaming
    device = model.device
    one = torch.ones((1, 1), dtype=torch.bool, device=device)
    positions = torch.cat([c.begin_step(one, layout)[0] for c in caches], dim=0)  # (B, 1): each row's own position
    rows = RowCaches(caches, model.config.get_text_config(decoder=True).num_hidden_layers)
    b = len(caches)
    out = model(input_ids=torch.tensor(tokens, device=device).view(b, 1), position_ids=positions, cache=rows, use_cache=True,
                attention_mask=torch.ones((b, 1, 1, 1), dtype=torch.bool, device=device), row_caches=rows, logits_to_keep=1)
    return out.logits[:, -1]
