"""Re-rotating cached RoPE keys (StreamingLLM, Xiao et al. 2023, Sec. 3.2 "Rolling KV cache with attention sinks").

A key cached at position p holds ``scale * R(p*theta) k``. When eviction moves it to position
p + delta, rotating it by ``R(delta*theta)`` gives exactly the key the model would compute at
the new position (rotations compose; the attention scaling factor commutes). The rotation is
done in fp32 and supports partial rotary dimensions (Phi-3 style) and scaled inverse frequencies.
"""
from __future__ import annotations

import torch
from torch import nn

from tenfold.errors import TenfoldError
from tenfold.models.decode_attention import DECODE_ATTENTION

SUPPORTED_ATTENTION = ("eager", "sdpa", DECODE_ATTENTION)


def find_rotary(model: nn.Module) -> nn.Module:
    """The model's rotary-embedding module (the one holding ``inv_freq``)."""
    for module in model.modules():
        if isinstance(getattr(module, "inv_freq", None), torch.Tensor) and hasattr(module, "attention_scaling"):
            return module
    raise TenfoldError(f"{type(model).__name__} has no rotary position embedding (RoPE); the sink cache needs one")


class RopeShift:
    """Rotates cached keys by a position delta, using the model's own inverse frequencies."""

    def __init__(self, rotary: nn.Module):
        self.rotary = rotary
        self._memo: dict = {}

    @property
    def inv_freq(self) -> torch.Tensor:
        return self.rotary.inv_freq.float()

    @property
    def position_limit(self) -> int | None:
        """Positions the RoPE keeps one set of frequencies below (dynamic NTK and LongRoPE switch past the model's
        original context), or None when any position will do."""
        rope_type = getattr(self.rotary, "rope_type", "default")
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


def check_supported(model: nn.Module) -> RopeShift:
    """Validate that ``model`` can stream with a sink cache; return its key re-rotator."""
    config = getattr(model, "config", None)
    if config is None:
        raise TenfoldError("the sink cache needs a transformers model (no .config found)")
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    impl = getattr(text, "_attn_implementation", None) or "eager"
    if impl not in SUPPORTED_ATTENTION:
        raise TenfoldError(f"attention implementation {impl!r} is not supported by the sink cache; "
                           f"load the model with attn_implementation='sdpa' or 'eager'")
    layer_types = getattr(text, "layer_types", None) or []
    if any(t != "full_attention" for t in layer_types):
        raise TenfoldError(f"models with {sorted(set(layer_types) - {'full_attention'})} layers are not supported "
                           f"by the sink cache (it needs full-attention RoPE layers)")
    return RopeShift(find_rotary(model))


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
