"""The CPU int4 kernel's layout, pinned on whatever torch is installed (issue 40): tenfold packs levels with
``torch._convert_weight_to_int4pack_for_cpu`` and multiplies with ``torch._weight_int4pack_mm_for_cpu``, private
aten ops whose packing has changed between releases. Each output element is probed on its own (one-hot inputs),
so a change in nibble order, row interleave or the scale/zero order fails here by name rather than decoding
garbage. Not skipped: a torch that lacks the ops must make tenfold fall back, which is checked instead."""
import torch

from tenfold.errors import TenfoldError
from tenfold.models.quantize import GROUP_SIZE, Int4Linear, int4_available, quantize_int4


def test_every_weight_element_lands_where_the_kernel_reads_it():
    if not int4_available():  # the contract without the kernel: int4 is refused in one line, the default moves on
        import pytest

        from tenfold.models.lm import resolve_quantize

        with pytest.raises(TenfoldError, match="CPU int4 kernel"):
            quantize_int4(torch.nn.Sequential(torch.nn.Linear(32, 16)))
        assert resolve_quantize(None, None, "cpu", "auto") is None  # the bundled model then loads unquantised
        return
    torch.manual_seed(0)
    n, k = 48, 3 * GROUP_SIZE
    q = torch.randint(0, 16, (n, k), dtype=torch.int32)
    q[:, 0], q[0, :] = 15, torch.arange(k) % 16  # extremes and a ramp: a swapped nibble or row shows at once
    scale = torch.rand(k // GROUP_SIZE, n) * 0.5 + 0.1
    zero = torch.randn(k // GROUP_SIZE, n)
    scale_zeros = torch.stack([scale, zero], dim=-1).to(torch.bfloat16)
    layer = Int4Linear.from_quantized(q, scale_zeros)
    s, z = scale_zeros[..., 0].float(), scale_zeros[..., 1].float()  # (groups, n)
    group = torch.arange(k) // GROUP_SIZE
    expected = (q.float() - 8) * s[group].T + z[group].T  # (n, k): the documented (q - 8) * scale + zero
    got = layer(torch.eye(k, dtype=torch.bfloat16)).float().T  # column j of the output: weight column j
    assert got.shape == (n, k)
    bad = (got - expected).abs() > 0.02 * expected.abs().clamp(min=0.05)  # bfloat16 output: ~3 digits
    assert not bad.any(), f"{int(bad.sum())} of {n * k} weights misplaced, first at {bad.nonzero()[0].tolist()} " \
                          f"(torch {torch.__version__}: the int4 packing changed)"
