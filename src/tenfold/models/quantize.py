"""Int4 weight-only linear layers for CPU decoding (issue 25: decode speed next to llama.cpp).

Each ``nn.Linear`` weight (N, K) is quantised in groups of ``group_size`` input columns, asymmetrically
(min/max per group, 16 levels: ``w ~ (q - 8) * scale + zero``), the layout of GGUF's Q4_1 blocks of 32 from
which the bundled model comes, so re-quantising its de-quantised weights loses almost nothing. Matrix products
run through PyTorch's own CPU int4 kernel (``torch._weight_int4pack_mm_for_cpu``, the kernel torchao's CPU int4
layout calls), which takes bfloat16 activations: each layer casts its input to bfloat16 and its output back to
the model's dtype, so the rest of the model (norms, attention, the cache) keeps its own precision. Only the
packed 4-bit weights and bfloat16 scales are kept.

The output projection (``lm_head``, tied to the input embedding in small models) is not quantised: in int4 it
cost the bundled model 7.6% perplexity (23.12 vs 21.47). In a float32 model it runs in bfloat16 instead
(:class:`BFloat16Linear`, a copy: the embedding keeps its float32 weights).
"""
from __future__ import annotations

import torch
from torch import nn

from tenfold.errors import TenfoldError

GROUP_SIZE = 32
PACK_ROWS = 16  # the CPU packer (torch._convert_weight_to_int4pack_for_cpu) takes out_features in multiples of this


def int4_available() -> bool:
    """Whether this PyTorch build has the CPU int4 matmul kernel."""
    return hasattr(torch, "_weight_int4pack_mm_for_cpu") and hasattr(torch, "_convert_weight_to_int4pack_for_cpu")


class Int4Linear(nn.Module):
    """``y = x W^T + b`` with ``W`` (out_features, in_features) held as packed int4 groups; ``x`` (..., in_features).

    Computes in bfloat16 and returns ``x``'s dtype. Build with :meth:`from_linear`.
    """

    def __init__(self, in_features: int, out_features: int, packed: torch.Tensor, scale_zeros: torch.Tensor,
                 bias: torch.Tensor | None, group_size: int = GROUP_SIZE):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", packed)
        self.register_buffer("scale_zeros", scale_zeros)  # (in_features / group_size, out_features, 2) bfloat16
        self.register_buffer("bias", bias)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, group_size: int = GROUP_SIZE) -> "Int4Linear":
        """Quantise ``linear`` (min/max per group of ``group_size`` inputs). Raises TenfoldError on shapes the
        kernel cannot take (in_features not a multiple of ``group_size``, out_features not a multiple of 16)."""
        check_shape(linear, group_size)
        w = linear.weight.detach().float()
        n, k = w.shape
        groups = w.view(n, k // group_size, group_size)
        low, high = groups.amin(-1), groups.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-10)
        q = ((groups - low[..., None]) / scale[..., None]).round().clamp(0, 15).to(torch.int32).view(n, k)
        zero = low + 8 * scale  # the kernel de-quantises (q - 8) * scale + zero
        scale_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        bias = None if linear.bias is None else linear.bias.detach().to(torch.bfloat16)
        return cls(k, n, packed, scale_zeros, bias, group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features).to(torch.bfloat16)
        y = torch._weight_int4pack_mm_for_cpu(flat, self.packed, self.group_size, self.scale_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"


class BFloat16Linear(nn.Module):
    """``nn.Linear`` computed in bfloat16 (a copy of the weights), returning the input's dtype: half the bytes
    of a float32 matrix-vector product, for the large output projection that int4 would damage."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16).contiguous())
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x.to(torch.bfloat16), self.weight, self.bias).to(x.dtype)


def check_shape(linear: nn.Linear, group_size: int = GROUP_SIZE, name: str = "") -> None:
    """Raise TenfoldError when the CPU int4 kernel cannot take ``linear``'s shape."""
    n, k = linear.weight.shape
    where = f" ({name})" if name else ""
    if k % group_size:
        raise TenfoldError(f"int4: in_features {k}{where} is not a multiple of the group size {group_size}")
    if n % PACK_ROWS:
        raise TenfoldError(f"int4: out_features {n}{where} is not a multiple of {PACK_ROWS}, which PyTorch's CPU int4 "
                           "kernel needs; use --dtype bfloat16 for this model")


def quantize_int4(model: nn.Module, group_size: int = GROUP_SIZE, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by :class:`Int4Linear` in place, but those named in ``skip``,
    which become :class:`BFloat16Linear` in a float32 model.

    The rest of the model keeps its dtype. The original weights are released. Raises
    TenfoldError when this PyTorch has no CPU int4 kernel or a layer's shape does not fit it.
    """
    if not int4_available():
        raise TenfoldError("int4 needs PyTorch's CPU int4 kernel (torch._weight_int4pack_mm_for_cpu), "
                           "missing in this PyTorch build")
    targets = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, linear in targets:  # every shape first: a refused model is left whole, not half-quantised
        if name.rpartition(".")[2] not in skip:
            check_shape(linear, group_size, name)
    for name, linear in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if child not in skip:
            setattr(parent, child, Int4Linear.from_linear(linear, group_size))
        elif linear.weight.dtype == torch.float32:
            setattr(parent, child, BFloat16Linear(linear))
    model.config.tenfold_quantization = {"method": "int4 weight-only", "group_size": group_size,
                                         "kept": list(skip)}
    return model
