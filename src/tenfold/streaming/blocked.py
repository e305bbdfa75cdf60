"""Blocked evaluation of the sink cache: the numbers of one-token-per-step streaming, many tokens per forward.

StreamingLLM (Sec. 3.2) streams one token per step. Once the cache is full, token ``t`` sees the
``S`` sinks at cache positions ``0..S-1`` and the recent tokens ``t-W+1..t`` at positions
``S..S+W-1`` (itself last), so its query sits at ``S+W-1`` whatever ``t`` is; and every cached key
and value of token ``j`` was computed in ``j``'s own step, under the same rule. Nothing depends on
*when* a token is processed, only on this rule, so a block of ``C`` tokens can be computed in one
forward pass, layer by layer, with an attention that applies the rule per query:

- recent keys: a band mask (``t-W+1 <= j <= t``); RoPE only sees the true distance ``t - j``,
  which is what the streaming cache's re-rotated keys give as well;
- sink keys: distance ``S+W-1-i`` for every query, obtained by rotating each query to cache
  position ``S+W-1`` (a per-query RoPE delta, fp32) before its dot products with the sinks.

Before the cache is full (``t < S+W-1``) streaming is plain causal attention, computed densely.
The result equals :func:`~tenfold.streaming.perplexity.perplexity` with one token per step up to
floating-point rounding (tested), at prefill speed: this is what makes the 400k-token runs of the
paper's Fig. 3 / Table 2 feasible on a CPU. It is an evaluation method: generation still streams
one token at a time through :class:`~tenfold.streaming.SinkCache`.

Integration is through transformers' public ``AttentionInterface`` (a registered attention
function, enabled for the duration of the evaluation) and a ``Cache`` subclass.
"""
from __future__ import annotations

import contextlib

import torch
from transformers import AttentionInterface, DynamicCache
from transformers.cache_utils import Cache, CacheLayerMixin
from transformers.masking_utils import AttentionMaskInterface

from tenfold.streaming.nll import rows_nll
from tenfold.streaming.rope import SLIDING, RopeShift, check_supported

BLOCKED_ATTENTION = "tenfold_sink_blocked"


def _blocked_attention(module, query, key, value, attention_mask, scaling=None, dropout=0.0, sink_blocks=None,
                       s_aux=None, softcap=None, **kwargs):
    """Attention of a block of queries under the sink-cache rule (see the module docstring).

    Full-attention layers: sinks (seen from cache position S+W-1) + a band of the last W tokens. Sliding-window
    layers of hybrid models: a band of their own ``sliding_window`` tokens, no sinks. ``s_aux`` (gpt-oss's learned
    per-head sink logits) joins every softmax as one more column; ``softcap`` (Gemma 2) caps the scores first.
    """
    sinks, layout, q_delta, window = sink_blocks
    shift = layout.shifts[module.layer_idx]
    if layout.kinds[module.layer_idx] == SLIDING:
        sinks, window = 0, layout.sliding_window
    b, heads, c, dim = query.shape
    kv_heads = key.shape[1]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling

    def scored(q, k):
        x = torch.matmul(q, k.transpose(-1, -2)) * scale
        return x if softcap is None else torch.tanh(x / softcap) * softcap

    q = query.float().reshape(b, kv_heads, group * c, dim)  # grouped-query heads folded into rows
    k_recent, v_recent = key[:, :, sinks:].float(), value[:, :, sinks:].float()
    n_recent = k_recent.shape[2]  # earlier tokens kept + this block's c
    scores = scored(q, k_recent)  # (b, kv, group*c, n_recent)
    # Query r (block row) is at frame position n_recent - c + r; it may see keys n_recent - c + r - window + 1 .. itself.
    rows = torch.arange(c, device=query.device)[:, None] + (n_recent - c)
    cols = torch.arange(n_recent, device=query.device)[None, :]
    allowed = (cols <= rows) & (cols > rows - window)
    scores = scores.masked_fill(~allowed.repeat(group, 1), float("-inf"))
    parts = [scores]
    if sinks:
        q_sink = shift.rotate(query.float(), q_delta).reshape(b, kv_heads, group * c, dim)
        parts.insert(0, scored(q_sink, key[:, :, :sinks].float()))
    if s_aux is not None:  # one learned logit per head, the same for every query row of that head
        parts.append(s_aux.float().view(1, kv_heads, group, 1, 1).expand(b, -1, -1, c, 1).reshape(b, kv_heads, -1, 1))
    probs = torch.softmax(torch.cat(parts, dim=-1), dim=-1)
    out = torch.matmul(probs[..., sinks : sinks + n_recent], v_recent)
    if sinks:
        out = out + torch.matmul(probs[..., :sinks], value[:, :, :sinks].float())
    out = out.reshape(b, kv_heads, group, c, -1).reshape(b, heads, c, -1).to(value.dtype)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # the attention function applies the sink-cache rule itself


AttentionInterface.register(BLOCKED_ATTENTION, _blocked_attention)
AttentionMaskInterface.register(BLOCKED_ATTENTION, _no_mask)


class _BlockLayer(CacheLayerMixin):
    """Sinks and the last ``hold`` tokens of one layer (``window - 1``; a sliding-window layer: its window - 1 and no
    sinks), recent keys in a frame where the first recent token of a full-attention layer sits at position 0."""

    is_sliding = False
    is_compileable = False

    def __init__(self, hold: int):
        super().__init__()
        self.hold = hold
        self.sink_k = self.sink_v = self.recent_k = self.recent_v = None
        self.new_k = self.new_v = None

    def lazy_initialization(self, key_states, value_states):
        self.is_initialized = True

    def update(self, key_states, value_states, *args, **kwargs):
        self.new_k, self.new_v = key_states, value_states
        return (torch.cat([self.sink_k, self.recent_k, key_states], dim=2),
                torch.cat([self.sink_v, self.recent_v, value_states], dim=2))

    def advance(self, block: int, shift: RopeShift) -> None:
        """Keep the last ``hold`` tokens, rotated back by the ``block`` positions the frame moves."""
        k = torch.cat([self.recent_k, self.new_k], dim=2)
        v = torch.cat([self.recent_v, self.new_v], dim=2)
        drop = max(0, k.shape[2] - self.hold)
        self.recent_k, self.recent_v = shift.rotate(k[:, :, drop:], -block), v[:, :, drop:]
        self.new_k = self.new_v = None

    def get_seq_length(self) -> int:
        return 0 if self.recent_k is None else self.sink_k.shape[2] + self.recent_k.shape[2]

    def get_mask_sizes(self, query_length: int):
        return self.get_seq_length() + query_length, 0

    def get_max_length(self) -> int:
        return -1


class _BlockCache(Cache):
    def __init__(self, holds: list[int]):
        super().__init__(layers=[_BlockLayer(hold) for hold in holds])


@contextlib.contextmanager
def _attention(model, name: str):
    before = model.config._attn_implementation
    model.set_attn_implementation(name)
    try:
        yield
    finally:
        model.set_attn_implementation(before)


@torch.no_grad()
def blocked_nll(model, ids: torch.Tensor, num_sinks: int, window: int, block: int = 256, tick=None) -> torch.Tensor:
    """Per-token NLL (B, T-1) of streaming ``ids`` (B, T) through a ``num_sinks`` + ``window`` sink cache.

    ``window`` attention (no sinks) is ``num_sinks=0``. Equal to one token per step through
    :class:`~tenfold.streaming.SinkCache` up to rounding; ``block`` tokens per forward pass.
    """
    layout = check_supported(model)
    tick = tick or (lambda done, total: None)
    batch, length = ids.shape
    total, size = length - 1, num_sinks + window
    # Phase 1: until the cache is full, streaming is causal attention over everything so far.
    head = min(size - 1, length)
    dense = DynamicCache(config=model.config)
    logits = model(input_ids=ids[:, :head], cache=dense, use_cache=True).logits
    pieces = [rows_nll(logits[:, : min(head, total)], ids[:, 1 : head + 1])]
    tick(min(head, total), total)
    if head >= length or head < num_sinks + 1:
        return torch.cat(pieces, dim=1)
    keep = window - 1
    sliding = [kind == SLIDING for kind in layout.kinds]
    cache = _BlockCache([layout.sliding_window - 1 if s else keep for s in sliding])
    for layer, src, is_sliding, shift in zip(cache.layers, dense.layers, sliding, layout.shifts):
        # Tokens num_sinks .. head-1 move to frame positions 0 .. window-2 (a sliding layer's last sliding_window - 1
        # tokens, which transformers' own sliding layer kept, to the same frame).
        first = 0 if is_sliding else num_sinks
        layer.sink_k, layer.sink_v = src.keys[:, :, :first], src.values[:, :, :first]
        layer.recent_k = shift.rotate(src.keys[:, :, first:head], -num_sinks)
        layer.recent_v = src.values[:, :, first:head]
    del dense
    with _attention(model, BLOCKED_ATTENTION):
        for start in range(head, length - 1, block):
            part = ids[:, start : min(start + block, length - 1)]
            c = part.shape[1]
            positions = torch.arange(keep, keep + c, device=ids.device).expand(batch, c)
            q_delta = (size - 1 - positions).to(torch.long)  # rotate each query to cache position S+W-1
            logits = model(input_ids=part, position_ids=positions, cache=cache, use_cache=True,
                           sink_blocks=(num_sinks, layout, q_delta, window)).logits
            pieces.append(rows_nll(logits, ids[:, start + 1 : start + c + 1]))
            for layer, shift in zip(cache.layers, layout.shifts):
                layer.advance(c, shift)
            tick(start + c, total)
    return torch.cat(pieces, dim=1)
