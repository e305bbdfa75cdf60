# Generated from tenfold's src/tenfold/streaming/rope.py by scripts/export_custom_generate.py: edit the source
# there and re-run the script, not this copy.
"""Re-rotating cached RoPE keys (StreamingLLM, Xiao et al. 2023, Sec. 3.2 "Rolling KV cache with attention sinks").

A key cached at position p holds ``scale * R(p*theta) k``. When eviction moves it to position
p + delta, rotating it by ``R(delta*theta)`` gives exactly the key the model would compute at
the new position (rotations compose; the attention scaling factor commutes). The rotation is
done in fp32 and supports partial rotary dimensions (Phi-3 style) and scaled inverse frequencies.
"""
from __future__ import annotations

import torch
from torch import nn

DECODE_ATTENTION = "tenfold_cpu_decode"  # tenfold's CPU decode attention, where tenfold registered it


class TenfoldError(ValueError):
    """The model cannot stream with the sink cache."""


SUPPORTED_ATTENTION = ("eager", "sdpa", DECODE_ATTENTION)


FULL, SLIDING = "full_attention", "sliding_attention"  # transformers' ``layer_types`` names
# Layer types of transformers 5.x the sink cache cannot keep exact, with the reason given to the user.
REFUSED_LAYER_TYPES = {
    "chunked_attention": "its attention restarts at fixed absolute chunk boundaries, which a rolling cache moves",
    "linear_attention": "it keeps a recurrent state, not keys and values a window can evict",
    "mamba": "it keeps a recurrent state, not keys and values a window can evict",
    "conv": "it keeps a convolution state, not keys and values a window can evict",
    "hybrid": "its layers mix attention with recurrent state",
}


def _per_type(module: nn.Module) -> bool:
    """A rotary module with one set of frequencies per layer type (Gemma 3: ``full_attention_inv_freq``, ...)."""
    return any(isinstance(getattr(module, f"{t}_inv_freq", None), torch.Tensor) for t in (FULL, SLIDING))


def find_rotary(model: nn.Module) -> nn.Module:
    """The model's rotary-embedding module: the one holding ``inv_freq`` (or one ``<layer type>_inv_freq`` per layer
    type). TenfoldError when the model has none."""
    for module in model.modules():
        if isinstance(getattr(module, "inv_freq", None), torch.Tensor) and hasattr(module, "attention_scaling"):
            return module
        if _per_type(module):
            return module
    raise TenfoldError(f"{type(model).__name__} has no rotary position embedding (RoPE); the sink cache needs one")


class RopeShift:
    """Rotates cached keys by a position delta, using the model's own inverse frequencies (those of ``layer_type``
    when the rotary module keeps one set per layer type, as Gemma 3's local and global RoPE bases)."""

    def __init__(self, rotary: nn.Module, layer_type: str | None = None):
        self.rotary = rotary
        self.layer_type = layer_type if layer_type is not None and _per_type(rotary) else None
        self._memo: dict = {}

    @property
    def inv_freq(self) -> torch.Tensor:
        if self.layer_type is not None:
            return getattr(self.rotary, f"{self.layer_type}_inv_freq").float()
        return self.rotary.inv_freq.float()

    @property
    def position_limit(self) -> int | None:
        """Positions the RoPE keeps one set of frequencies below (dynamic NTK and LongRoPE switch past the model's
        original context), or None when any position will do."""
        rope_type = getattr(self.rotary, "rope_type", "default")
        if isinstance(rope_type, dict):  # one RoPE per layer type
            rope_type = rope_type.get(self.layer_type or FULL, "default")
        if not isinstance(rope_type, str):
            return None
        if "dynamic" in rope_type:
            return getattr(self.rotary, "original_max_seq_len", None)
        if rope_type == "longrope":
            params = getattr(getattr(self.rotary, "config", None), "rope_parameters", None) or {}
            return params.get("original_max_position_embeddings") or getattr(self.rotary, "original_max_seq_len", None)
        return None

    def _cos_sin(self, delta: int, inv_freq: torch.Tensor):
        """cos/sin of one integer shift, memoised: every layer of every step shifts by the same few deltas."""
        key = (delta, inv_freq.device, inv_freq.data_ptr())
        if key not in self._memo:
            if len(self._memo) > 64:
                self._memo.clear()
            angles = torch.tensor(float(delta), device=inv_freq.device) * inv_freq
            emb = torch.cat((angles, angles)).view(1, 1, 1, -1)
            self._memo[key] = (emb.cos(), emb.sin())
        return self._memo[key]

    def rotate(self, keys: torch.Tensor, delta) -> torch.Tensor:
        """Rotate ``keys`` (B, H, N, D) by ``delta`` positions: an int, or a (B, N) tensor per row and column."""
        inv_freq = self.inv_freq.to(keys.device)
        rot_dim = 2 * inv_freq.numel()
        if isinstance(delta, int):
            if delta == 0:
                return keys
            cos, sin = self._cos_sin(delta, inv_freq)
        else:
            angles = delta.to(keys.device).float()[:, None, :, None] * inv_freq  # (B, 1, N, rot/2)
            emb = torch.cat((angles, angles), dim=-1)
            cos, sin = emb.cos(), emb.sin()
        part = keys[..., :rot_dim].float()
        half = rot_dim // 2
        rotated_half = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
        out = (part * cos + rotated_half * sin).to(keys.dtype)
        if rot_dim < keys.shape[-1]:
            out = torch.cat((out, keys[..., rot_dim:]), dim=-1)
        return out

    def rotate_into(self, dst: torch.Tensor, src: torch.Tensor, delta: int) -> None:
        """``dst[...] = rotate(src, delta)`` for an int ``delta``, in four passes (``dst`` may overlap ``src``).

        This is the per-step eviction of a full cache during decoding, so it avoids the temporaries
        of :meth:`rotate`: ``x * cos`` then two fused multiply-adds on the halves, in float32.
        """
        if delta == 0:
            if dst.data_ptr() != src.data_ptr():
                dst.copy_(src.clone())
            return
        inv_freq = self.inv_freq.to(src.device)
        half = inv_freq.numel()
        cos, sin = self._cos_sin(delta, inv_freq)
        x = src.float()  # a copy: safe when dst overlaps src
        if 2 * half == x.shape[-1]:
            out = x * cos
        else:  # partial rotary (Phi-3 style): the other dimensions move unchanged
            out = x.clone()
            out[..., : 2 * half].mul_(cos)
        out[..., :half].addcmul_(x[..., half : 2 * half], sin[..., :half], value=-1.0)
        out[..., half : 2 * half].addcmul_(x[..., :half], sin[..., half:])
        dst.copy_(out)


class StreamingLayout:
    """What a sink cache needs to know about a model's layers: each layer's kind and RoPE.

    ``kinds[i]`` is ``"full_attention"`` (sinks + window, StreamingLLM) or ``"sliding_attention"`` (the layer's own
    last ``sliding_window`` tokens, at true relative distances); ``shifts[i]`` rotates layer ``i``'s keys with its own
    RoPE frequencies. ``shift`` is the full-attention layers' (it sets the frame-position limit).
    """

    def __init__(self, kinds: list[str], shifts: list[RopeShift], sliding_window: int | None):
        self.kinds, self.shifts, self.sliding_window = kinds, shifts, sliding_window
        self.shift = next((sh for k, sh in zip(kinds, shifts) if k == FULL), shifts[0])

    @property
    def hybrid(self) -> bool:
        return SLIDING in self.kinds

    @property
    def position_limit(self) -> int | None:
        return self.shift.position_limit


def check_supported(model: nn.Module) -> StreamingLayout:
    """Validate that ``model`` can stream with a sink cache; return its :class:`StreamingLayout`.

    Full-attention RoPE layers stream with sinks + window; ``sliding_attention`` layers (Gemma 2/3, gpt-oss, Cohere 2,
    ...) keep their own window. TenfoldError, naming the problem, for a model without RoPE, an attention implementation
    other than eager / sdpa, or a layer type whose semantics a rolling cache cannot keep exact.
    """
    config = getattr(model, "config", None)
    if config is None:
        raise TenfoldError("the sink cache needs a transformers model (no .config found)")
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    impl = getattr(text, "_attn_implementation", None) or "eager"
    if impl not in SUPPORTED_ATTENTION:
        raise TenfoldError(f"attention implementation {impl!r} is not supported by the sink cache; "
                           f"load the model with attn_implementation='sdpa' or 'eager'")
    layer_types = list(getattr(text, "layer_types", None) or [])
    for kind in dict.fromkeys(layer_types):
        if kind in (FULL, SLIDING):
            continue
        why = REFUSED_LAYER_TYPES.get(kind, "the sink cache knows full-attention and sliding-window layers only")
        raise TenfoldError(f"{type(model).__name__} has {kind!r} layers, which the sink cache does not support: {why}")
    sliding_window = getattr(text, "sliding_window", None) if SLIDING in layer_types else None
    if SLIDING in layer_types and not (isinstance(sliding_window, int) and sliding_window >= 1):
        raise TenfoldError(f"{type(model).__name__} has sliding-window layers but no sliding_window size in its config")
    rotary = find_rotary(model)
    layers = int(getattr(text, "num_hidden_layers", len(layer_types) or 1))
    kinds = layer_types[:layers] if layer_types else [FULL] * layers
    shifts = {kind: RopeShift(rotary, kind) for kind in set(kinds)}
    return StreamingLayout(kinds, [shifts[k] for k in kinds], sliding_window)


def check_cache_fits(model: nn.Module, cache_size: int) -> None:
    """Refuse a sliding-window model (Mistral's ``sliding_window``, without per-layer ``layer_types``) whose window
    is shorter than the sink cache: its own mask would hide the sinks and the oldest cached tokens, so the cache would
    keep tokens no query can see. A sliding window at least as long as the cache never masks anything."""
    config = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    sliding = getattr(text, "sliding_window", None)
    if (sliding is None or getattr(text, "use_sliding_window", True) is False
            or getattr(text, "layer_types", None)):  # layer_types: check_supported has judged them
        return
    if sliding < cache_size:
        raise TenfoldError(f"the model attends to its last {sliding} tokens only (sliding_window), fewer than the sink "
                           f"cache's {cache_size}: its mask would hide the sinks; use num_sinks + window <= {sliding}")
