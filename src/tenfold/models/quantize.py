"""Int4 weight-only linear layers for CPU decoding (issue 25: decode speed next to llama.cpp).

Each ``nn.Linear`` weight (N, K) is quantised in groups of ``group_size`` input columns, asymmetrically
(min/max per group, 16 levels: ``w ~ (q - 8) * scale + zero``), the layout of GGUF's Q4_1 blocks of 32 from
which the bundled model comes, so re-quantising its de-quantised weights loses almost nothing. Matrix products
run through PyTorch's own CPU int4 kernel (``torch._weight_int4pack_mm_for_cpu``, the kernel torchao's CPU int4
layout calls), which takes bfloat16 activations: each layer casts its input to bfloat16 and its output back to
the model's dtype, so the rest of the model (norms, attention, the cache) keeps its own precision. Only the
packed 4-bit weights and bfloat16 scales are kept.

The output projection (``lm_head``, tied to the input embedding in small models) is not quantised: in int4 it
cost the bundled model 7.6% perplexity (23.12 vs 21.47). In a float32 model it runs with 16-bit weights instead
(:class:`HalfLinear`: float16 where the weights fit, else bfloat16, its likeliest outputs recomputed in float32);
when it is tied to the input embedding, both share one 16-bit table
(:class:`HalfEmbedding`), so no float32 copy of it is kept either.
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
    def from_linear(cls, linear: nn.Linear, group_size: int = GROUP_SIZE) -> "Int4Linear":
        """Quantise ``linear`` (min/max per group of ``group_size`` inputs). Raises TenfoldError on shapes the
        kernel cannot take (in_features not a multiple of ``group_size``, out_features not a multiple of 16)."""
        check_shape(linear, group_size)
        return cls.from_weight(linear.weight, linear.bias, group_size)

    @classmethod
    @torch.no_grad()
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    group_size: int = GROUP_SIZE) -> "Int4Linear":
        """Quantise a weight (out_features, in_features) and optional bias (out_features,); shapes as
        :meth:`from_linear`. Temporary memory: about 3x the weight in float32."""
        q, scale_zeros = quantize_groups(weight, group_size)
        return cls.from_quantized(q, scale_zeros, bias, group_size)

    @classmethod
    @torch.no_grad()
    def from_quantized(cls, q: torch.Tensor, scale_zeros: torch.Tensor, bias: torch.Tensor | None = None,
                       group_size: int = GROUP_SIZE) -> "Int4Linear":
        """A layer from :func:`quantize_groups`' output: levels ``q`` (out_features, in_features) int32 in 0..15
        and ``scale_zeros`` (in_features / group_size, out_features, 2) bfloat16. Packs ``q`` for the kernel."""
        n, k = q.shape
        packed = torch._convert_weight_to_int4pack_for_cpu(q, 1)
        bias = None if bias is None else bias.detach().to(torch.bfloat16)
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


@torch.no_grad()
def quantize_groups(weight: torch.Tensor, group_size: int = GROUP_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric min/max int4 quantisation of ``weight`` (out_features, in_features) in groups of ``group_size``
    inputs: returns levels ``q`` (out_features, in_features) int32 in 0..15 and ``scale_zeros``
    (in_features / group_size, out_features, 2) bfloat16, such that ``w ~ (q - 8) * scale + zero`` (the CPU
    kernel's convention). Raises TenfoldError on shapes the kernel cannot take."""
    n, k = weight.shape
    check_dims(n, k, group_size)
    groups = weight.detach().to(torch.float32, copy=True).reshape(n, k // group_size, group_size)  # own copy
    low, high = torch.aminmax(groups, dim=-1)
    scale = ((high - low) / 15).clamp_(min=1e-10)
    q = groups.sub_(low[..., None]).div_(scale[..., None]).round_().clamp_(0, 15).to(torch.int32).view(n, k)
    del groups
    zero = low + 8 * scale  # the kernel de-quantises (q - 8) * scale + zero
    scale_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(torch.bfloat16).contiguous()
    return q, scale_zeros


HALF_DTYPES = (torch.float16, torch.bfloat16)  # in order of preference; the first whose range holds every value


def half_rows(rows: int, read_rows, step: int) -> torch.Tensor:
    """A 2-D table of ``rows`` rows in 16 bits, filled ``step`` rows at a time from ``read_rows(start, stop)``
    (any float dtype; called again for every row if float16 overflows), so a float32 original never needs to be
    resident whole. float16 when every value fits (10 mantissa bits: 8x finer than bfloat16, and faster on CPU
    here: 2.3 vs 3.5 ms for the bundled model's output projection, one thread), else bfloat16 (float32's range).
    The one place that decides the 16-bit dtype, for in-memory weights (:func:`to_half`) and weights read from a
    file in blocks (``tenfold.models.int4_load``)."""
    first = read_rows(0, min(rows, step))
    for dtype in HALF_DTYPES:
        out = torch.empty(rows, *first.shape[1:], dtype=dtype)
        for start in range(0, rows, step):
            block = first if start == 0 else read_rows(start, start + step)
            out[start:start + step] = block
            del block
        if dtype == HALF_DTYPES[-1] or bool(torch.isfinite(out).all()):
            return out
    raise AssertionError("unreachable")


def to_half(t: torch.Tensor) -> torch.Tensor:
    """``t`` (any shape) in 16 bits, contiguous: float16 when every value fits, else bfloat16 (:func:`half_rows`)."""
    t = t.detach()
    flat = t.reshape(t.shape[0] if t.dim() > 1 else 1, -1)
    return half_rows(flat.shape[0], lambda start, stop: flat[start:stop], flat.shape[0]).reshape(t.shape)


class HalfLinear(nn.Module):
    """``y = x W^T + b`` with 16-bit weights (float16, or bfloat16 where float16 cannot hold them), returning
    ``x``'s dtype: half the bytes of a float32 matrix-vector product, for the large output projection that int4
    would damage. ``weight`` (out_features, in_features), possibly shared with a :class:`HalfEmbedding`."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.to(weight.dtype))

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "HalfLinear":
        """A 16-bit copy of ``linear`` (:func:`to_half`)."""
        weight = to_half(linear.weight)
        return cls(weight, None if linear.bias is None else linear.bias.detach())

    refine_top = 64  # outputs recomputed in float32 per row (the likeliest tokens, for an output projection)
    refine_rows = 64  # rows of x refined at once (bounds the gathered weights: 64 x 64 x in_features floats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_features) -> (..., out_features) in ``x``'s dtype. For float32 ``x``, the ``refine_top`` largest
        outputs of each row are recomputed in float32 from the 16-bit weights and the float32 input: bfloat16
        outputs are only ~0.06-0.12 apart at logit magnitudes, which made exact ties between the top tokens and let
        tiny batching noise flip the rounding (review 12); the top of every row is now float32-accurate."""
        y = nn.functional.linear(x.to(self.weight.dtype), self.weight, self.bias)
        if x.dtype != torch.float32 or not self.refine_top or self.out_features <= self.refine_top:
            return y.to(x.dtype)
        out = y.float().reshape(-1, self.out_features)
        flat = x.reshape(-1, self.in_features)
        for start in range(0, flat.shape[0], self.refine_rows):
            rows = out[start : start + self.refine_rows]
            idx = rows.topk(self.refine_top, dim=-1).indices  # (n, k)
            exact = torch.einsum("nkd,nd->nk", self.weight[idx].float(), flat[start : start + self.refine_rows])
            if self.bias is not None:
                exact = exact + self.bias[idx].float()
            rows.scatter_(1, idx, exact)
        return out.reshape(*x.shape[:-1], self.out_features)


class HalfEmbedding(nn.Embedding):
    """An ``nn.Embedding`` whose table is 16-bit (float16 or bfloat16) and whose output is ``output_dtype``
    (float32): a tied input embedding that shares its table with a :class:`HalfLinear` output projection, so the
    model holds one 16-bit table instead of a float32 one plus a copy (57 MB instead of 170 MB for the bundled
    model). Ids (...,) -> vectors (..., embedding_dim)."""

    def __init__(self, weight: torch.Tensor, padding_idx: int | None = None,
                 output_dtype: torch.dtype = torch.float32):
        super().__init__(weight.shape[0], weight.shape[1], padding_idx=padding_idx, _weight=weight, _freeze=True)
        self.output_dtype = output_dtype

    def forward(self, input: torch.Tensor) -> torch.Tensor:  # noqa: A002 - nn.Embedding's name
        return super().forward(input).to(self.output_dtype)


def share_tied_half(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> bool:
    """If ``model``'s float32 output projection (named in ``skip``) is tied to its input embedding, make both use
    one 16-bit table (:func:`to_half`; :class:`HalfEmbedding` + :class:`HalfLinear`). Returns whether it did."""
    out, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if not isinstance(out, nn.Linear) or type(emb) is not nn.Embedding or out.weight is not emb.weight:
        return False
    if out.weight.dtype != torch.float32 or out.bias is not None:
        return False
    name = next(n for n, m in model.named_modules() if m is out)
    if name.rpartition(".")[2] not in skip:
        return False
    table = to_half(emb.weight)
    model.set_input_embeddings(HalfEmbedding(table, emb.padding_idx, torch.float32))
    model.set_output_embeddings(HalfLinear(model.get_input_embeddings().weight.detach()))
    return True


def to_half_linear(model: nn.Module, skip: tuple[str, ...] = ("lm_head",)) -> None:
    """Replace the float32 ``nn.Linear`` layers named in ``skip`` by :class:`HalfLinear` copies."""
    for name, linear in [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]:
        parent_name, _, child = name.rpartition(".")
        if child in skip and linear.weight.dtype == torch.float32:
            setattr(model.get_submodule(parent_name) if parent_name else model, child, HalfLinear.from_linear(linear))


def mark_quantized(model: nn.Module, group_size: int = GROUP_SIZE, skip: tuple[str, ...] = ("lm_head",)) -> None:
    """Record the quantisation in ``model.config`` (``tenfold_quantization``), where a model has a config."""
    if getattr(model, "config", None) is not None:
        model.config.tenfold_quantization = {"method": "int4 weight-only", "group_size": group_size,
                                             "kept": list(skip)}


def is_quantized(model: nn.Module) -> bool:
    """Whether ``model`` holds int4 layers (it can decode, not train)."""
    return any(isinstance(m, Int4Linear) for m in model.modules())


def weights_label(model: nn.Module) -> str:
    """The weights as a user names them: "int4" for an int4 model, else the parameters' dtype ("float32", ...)."""
    return "int4" if is_quantized(model) else str(next(model.parameters()).dtype).replace("torch.", "")


def check_shape(linear: nn.Linear, group_size: int = GROUP_SIZE, name: str = "") -> None:
    """Raise TenfoldError when the CPU int4 kernel cannot take ``linear``'s shape."""
    n, k = linear.weight.shape
    check_dims(n, k, group_size, name)


def check_dims(out_features: int, in_features: int, group_size: int = GROUP_SIZE, name: str = "") -> None:
    """Raise TenfoldError when the CPU int4 kernel cannot take a (out_features, in_features) weight."""
    where = f" ({name})" if name else ""
    if in_features % group_size:
        raise TenfoldError(f"int4: in_features {in_features}{where} is not a multiple of the group size {group_size}")
    if out_features % PACK_ROWS:
        raise TenfoldError(f"int4: out_features {out_features}{where} is not a multiple of {PACK_ROWS}, which "
                           "PyTorch's CPU int4 kernel needs; use --dtype bfloat16 for this model")


def quantize_int4(model: nn.Module, group_size: int = GROUP_SIZE, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` by :class:`Int4Linear` in place, but those named in ``skip``,
    which become :class:`HalfLinear` in a float32 model.

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
        if child not in skip:
            setattr(model.get_submodule(parent_name) if parent_name else model, child,
                    Int4Linear.from_linear(linear, group_size))
    if hasattr(model, "get_output_embeddings"):
        share_tied_half(model, skip)
    to_half_linear(model, skip)
    mark_quantized(model, group_size, skip)
    return model
