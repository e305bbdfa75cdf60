"""Single-query attention for half-precision decoding on CPU (StreamingLLM, Sec. 4.5 decoding speed).

PyTorch's CPU ``scaled_dot_product_attention`` runs a flash kernel that is slow for one query
row in float16 (about 1 ms per layer at 1,024 cached tokens, most of a decode step here). During
decoding the attention of one new token is two small matrix products, which this function does in
float32 with grouped-query heads folded into the matrix rows (no ``repeat_kv`` copy). Everything
else (prefill, training, float32, GPUs) goes to transformers' own SDPA function unchanged.

It is registered with transformers' public ``AttentionInterface`` / ``AttentionMaskInterface``
under :data:`DECODE_ATTENTION`; :func:`tenfold.models.load_lm` selects it by default.
"""
from __future__ import annotations

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

DECODE_ATTENTION = "tenfold_cpu_decode"  # no "sdpa" in the name: transformers would then require SDPA support (gpt-oss has none)
_HALF = (torch.float16, torch.bfloat16)


def decode_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, row_caches=None,
                             **kwargs):
    """SDPA, except for one-query half-precision CPU steps, which use two float32 matrix products.

    ``ring_valid`` ((B, N) bool, :mod:`tenfold.streaming.compiled`): the key columns to attend to, replacing
    ``attention_mask``; attention is then :func:`explicit_attention`.
    ``row_caches`` (continuous batching, :mod:`tenfold.serve.batching`): row ``i`` of the (B, H, 1, D) queries
    attends to ``row_caches.current[layer][i]``, its own cache's keys and values, instead of ``key``/``value``.
    """
    kwargs.pop("ring", None)
    ring_valid = kwargs.pop("ring_valid", None)
    if ring_valid is not None:  # the compiled ring step: the filled columns of a fixed-size cache, written out
        # as two matrix products that inductor fuses (faster than the flash kernel for one query row)
        return explicit_attention(query, key, value, ring_valid[:, None, None, :], scaling,
                                  s_aux=kwargs.pop("s_aux", None), softcap=kwargs.pop("softcap", None)), None
    if row_caches is not None:
        outs = [decode_attention_forward(module, query[i : i + 1], k, v, None, scaling=scaling, **kwargs)[0]
                for i, (k, v) in enumerate(row_caches.current[module.layer_idx])]
        return torch.cat(outs, dim=0), None
    b, heads, q_len, dim = query.shape
    s_aux, softcap = kwargs.pop("s_aux", None), kwargs.pop("softcap", None)
    if s_aux is not None or softcap is not None:  # SDPA has neither learned sinks (gpt-oss) nor soft-capping (Gemma 2)
        return explicit_attention(query, key, value, attention_mask, scaling, s_aux=s_aux, softcap=softcap), None
    if q_len != 1 or dropout or query.dtype not in _HALF or query.device.type != "cpu" or kwargs.get("sinks") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    kv_heads = key.shape[1]
    scale = dim**-0.5 if scaling is None else scaling
    q = query.reshape(b, kv_heads, heads // kv_heads, dim).float()
    scores = torch.matmul(q, key.float().transpose(-1, -2)) * scale  # (b, kv_heads, group, L)
    if attention_mask is not None:
        mask = attention_mask[..., -1:, : key.shape[-2]]  # (b or 1, 1, 1, L)
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask.float()
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.float()).to(value.dtype)  # (b, kv_heads, group, dv)
    return out.reshape(b, 1, heads, value.shape[-1]), None


def explicit_attention(query, key, value, attention_mask, scaling=None, s_aux=None, softcap=None) -> torch.Tensor:
    """Attention written out in float32, for what SDPA cannot express: gpt-oss's learned per-head sink logits
    ``s_aux`` (H,) join each softmax as one more column, then drop out (``modeling_gpt_oss.eager_attention_forward``),
    and Gemma 2's ``softcap`` (scores -> softcap * tanh(scores / softcap), before the mask).

    ``query`` (B, H, Q, D), ``key`` / ``value`` (B, H_kv, L, D); ``attention_mask``: boolean (True = attend) or
    additive float, (B or 1, 1, Q, L), or None (causal, the queries being the last Q of the L positions).
    Returns (B, Q, H, D_v) in ``value``'s dtype.
    """
    b, heads, q_len, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    q = query.float().reshape(b, kv_heads, group * q_len, dim)  # grouped-query heads folded into rows (no repeat_kv)
    scores = torch.matmul(q, key.float().transpose(-1, -2)) * scale  # (b, kv, group*q, L)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.view(b, kv_heads, group, q_len, length)
    if attention_mask is not None:
        mask = attention_mask[..., -q_len:, :length][:, :, None]  # (b or 1, 1, 1, q, L)
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    elif q_len > 1:
        rows = torch.arange(q_len, device=query.device)[:, None] + (length - q_len)
        scores = scores.masked_fill(torch.arange(length, device=query.device)[None, :] > rows, float("-inf"))
    if s_aux is not None:
        sink = s_aux.float().view(1, kv_heads, group, 1, 1).expand(b, -1, -1, q_len, 1)
        probs = torch.softmax(torch.cat([scores, sink], dim=-1), dim=-1)[..., :-1]
    else:
        probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs.reshape(b, kv_heads, group * q_len, length), value.float())  # (b, kv, group*q, dv)
    out = out.view(b, kv_heads, group, q_len, -1).reshape(b, heads, q_len, -1).to(value.dtype)
    return out.transpose(1, 2).contiguous()


def use_decode_attention(model) -> None:
    """Route ``model``'s attention through :data:`DECODE_ATTENTION` (the default of ``load_lm``; sdpa and eager
    models are switched to it, and their plain calls compute what they did). Idempotent.

    Raises ValueError for attention implementations other than eager, sdpa and tenfold's CPU decode.
    """
    impl = model.config._attn_implementation
    if impl == DECODE_ATTENTION:
        return
    if impl not in ("eager", "sdpa"):
        raise ValueError(f"this needs sdpa or eager attention, not {impl!r}")
    model.set_attn_implementation(DECODE_ATTENTION)


AttentionInterface.register(DECODE_ATTENTION, decode_attention_forward)
AttentionMaskInterface.register(DECODE_ATTENTION, sdpa_mask)
