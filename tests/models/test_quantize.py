"""Int4 weight-only linear layers (issue 25): exact against their own de-quantised weights, perplexity near fp32."""
import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from tenfold.errors import TenfoldError
from tenfold.models.quantize import Int4Linear, int4_available, quantize_int4

pytestmark = pytest.mark.skipif(not int4_available(), reason="this PyTorch build has no CPU int4 kernel")


def _dequantised(layer: Int4Linear, weight: torch.Tensor) -> torch.Tensor:
    """What the layer should compute with: min/max groups of 32, 16 levels (recomputed here independently)."""
    n, k = weight.shape
    g = weight.view(n, k // 32, 32)
    low, high = g.amin(-1, keepdim=True), g.amax(-1, keepdim=True)
    scale = (high - low) / 15
    return (((g - low) / scale).round().clamp(0, 15) * scale + low).view(n, k)


def test_int4_linear_computes_with_its_quantised_weights():
    torch.manual_seed(0)
    linear = nn.Linear(128, 96, bias=True)
    layer = Int4Linear.from_linear(linear)
    x = torch.randn(5, 7, 128)
    reference = x @ _dequantised(layer, linear.weight.detach()).T + linear.bias.detach()
    got = layer(x)
    assert got.shape == (5, 7, 96) and got.dtype == x.dtype
    # bfloat16 activations: about 3 significant digits
    assert float((got - reference).abs().max()) <= 0.02 * float(reference.abs().max())
    assert float((got - x @ linear.weight.detach().T - linear.bias.detach()).abs().mean()) > 1e-3  # it is quantised


def test_a_layer_the_kernel_cannot_take_is_refused():
    with pytest.raises(TenfoldError, match="multiple of the group size"):
        Int4Linear.from_linear(nn.Linear(100, 64))


def test_out_features_the_kernel_cannot_pack_are_refused_and_the_model_is_left_whole():
    """Review 25: the CPU int4 packer needs out_features divisible by 16; a layer with 100 outputs raised a bare
    RuntimeError from torch, after the layers before it had already been replaced (a half-quantised model)."""
    with pytest.raises(TenfoldError, match="out_features 100"):
        Int4Linear.from_linear(nn.Linear(64, 100))
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 100))
    model.config = type("Config", (), {})()
    with pytest.raises(TenfoldError, match="out_features 100"):
        quantize_int4(model)
    assert all(isinstance(m, nn.Linear) for m in model)  # nothing was replaced


@pytest.mark.slow
def test_bundled_model_in_int4_keeps_perplexity_and_streams(lm):
    from tenfold.models import load_lm
    from tenfold.streaming.experiment import _austen_ids

    model, _ = lm
    q, _ = load_lm(quantize="int4")
    from tenfold.models.quantize import HalfLinear

    assert not [n for n, m in q.named_modules() if isinstance(m, nn.Linear)]
    assert sum(isinstance(m, Int4Linear) for m in q.modules()) == 7 * 30 and isinstance(q.lm_head, HalfLinear)
    # the tied embedding and lm_head share one float16 table; norms stay float32
    assert q.model.embed_tokens.weight.dtype == torch.float16 and q.model.norm.weight.dtype == torch.float32
    assert q.model.embed_tokens.weight.data_ptr() == q.lm_head.weight.data_ptr()
    assert not any(p.dtype == torch.float32 and p.numel() > 1_000_000 for p in [*q.parameters(), *q.buffers()])
    ids = _austen_ids(513)[None]
    with torch.no_grad():
        nll = {name: float(nn.functional.cross_entropy(m(input_ids=ids[:, :-1]).logits[0].float(), ids[0, 1:]))
               for name, m in (("fp32", model), ("int4", q))}
    assert abs(torch.tensor(nll["int4"] - nll["fp32"]).exp() - 1) <= 0.01, nll  # perplexity within 1%
    with pytest.raises(TenfoldError, match="unknown quantization"):
        load_lm(quantize="int3")


@pytest.mark.slow
def test_dtype_int4_flag_reaches_the_model_through_the_cli():
    """`stream-ppl --dtype int4` streams through the sink cache on int4 weights: close to, not equal to, fp32."""
    out = {}
    for dtype in ("float32", "int4"):
        r = subprocess.run([sys.executable, "-m", "tenfold", "stream-ppl", "--book", "emma", "--tokens", "400",
                            "--window", "124", "--dtype", dtype, "--json"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stderr
        out[dtype] = json.loads(r.stdout)
    a, b = out["float32"]["ppl"], out["int4"]["ppl"]
    assert a != b and abs(b / a - 1) <= 0.02, (a, b)


def test_default_load_is_int4_for_the_bundled_model_only(lm):
    """issue 25: load_lm() decodes the bundled model in int4 by default; an explicit dtype, quantize=None or a
    user's own model directory keep float weights. The one-weight-at-a-time loader builds exactly the model that
    quantising a full float32 load builds (same packed weights, same logits)."""
    from tenfold.models import load_lm
    from tenfold.models.int4_load import load_int4
    from tenfold.models.lm import cached_dir, resolve_quantize

    assert resolve_quantize(None, None, None, "auto") == "int4"
    assert resolve_quantize("SmolLM2-135M-Instruct", None, None, "auto") == "int4"
    assert resolve_quantize(None, torch.float32, None, "auto") is None  # an explicit dtype is honoured
    assert resolve_quantize(None, None, "cuda", "auto") is None
    assert resolve_quantize(str(cached_dir()), None, None, "auto") is None  # a model directory is "your own"
    assert resolve_quantize(None, None, None, None) is None
    default, _ = load_lm()
    assert sum(isinstance(m, Int4Linear) for m in default.modules()) == 7 * 30
    assert not any(p.requires_grad for p in default.parameters())
    own, _ = load_lm(str(cached_dir()))
    assert not any(isinstance(m, Int4Linear) for m in own.modules())
    assert own.model.embed_tokens.weight.dtype == torch.float32
    full = quantize_int4(own)  # the other path: a full float32 load, then quantised
    assert load_int4(cached_dir()) is not None
    ids = torch.tensor([[1, 504, 3458, 282, 260, 1345, 30, 2]])
    with torch.no_grad():
        a, b = default(input_ids=ids).logits, full(input_ids=ids).logits
    assert torch.equal(a, b)
    for (name, x), (_, y) in zip(sorted(default.state_dict().items()), sorted(full.state_dict().items())):
        assert torch.equal(x, y), name
    model, _ = lm
    assert not any(isinstance(m, Int4Linear) for m in model.modules())  # the suite's shared model is float32


def test_load_int4_declines_checkpoints_it_cannot_read(tmp_path):
    """No safetensors in the folder: the streaming loader says None and load_lm falls back to a full load."""
    from tenfold.models.int4_load import load_int4

    (tmp_path / "config.json").write_text("{}")
    assert load_int4(tmp_path) is None


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_safetensors_file_is_one_line_for_every_dtype(tmp_path, damage):
    """Was a SafetensorError traceback from `tenfold generate --model DIR` (int4, float32 and auto alike)."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tenfold.models.lm import resolve

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(resolve("smollm2-135m-instruct")).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    if damage == "truncated":
        with open(weights, "r+b") as f:
            f.truncate(weights.stat().st_size // 2)
    else:
        weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    for dtype in ("int4", "float32", "auto"):
        r = subprocess.run([sys.executable, "-m", "tenfold", "generate", "--model", str(tmp_path), "--dtype", dtype,
                            "--max-new-tokens", "2", "hi"], capture_output=True, text=True, timeout=300)
        assert r.returncode != 0 and "Traceback" not in r.stderr, (dtype, r.stderr[-2000:])
        assert r.stderr.strip().splitlines()[-1].startswith("tenfold: error: cannot load model"), r.stderr


def test_bfloat16_output_projection_is_float32_accurate_at_the_top_and_batch_independent():
    """Review 12: bfloat16 logits are ~0.06-0.12 apart, so the top tokens tied exactly and batching noise flipped
    greedy choices; the top ``refine_top`` outputs of each row are recomputed in float32."""
    from tenfold.models.quantize import HalfLinear

    torch.manual_seed(0)
    linear = nn.Linear(576, 4096, bias=True)
    layer = HalfLinear.from_linear(linear)
    x = torch.randn(70, 576) * 3  # more rows than one refinement block
    assert layer.weight.dtype == torch.float16  # these weights fit float16
    want = x @ layer.weight.float().T + layer.bias.float()  # float32 arithmetic on the 16-bit weights
    got = layer(x)
    top = want.topk(layer.refine_top // 2, dim=-1).indices
    assert float((got.gather(1, top) - want.gather(1, top)).abs().max()) < 1e-4
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    unrefined = nn.functional.linear(x.bfloat16(), layer.weight.bfloat16(), layer.bias.bfloat16()).float()
    assert float((unrefined.gather(1, top) - want.gather(1, top)).abs().max()) > 1e-3  # bfloat16 before review 12
    big = HalfLinear.from_linear(nn.Linear(64, 64).requires_grad_(False).apply(lambda m: m.weight.mul_(1e6)))
    assert big.weight.dtype == torch.bfloat16  # float16 cannot hold 1e5-sized weights: bfloat16 keeps the range
    alone = layer(x[5:6])[0]  # a row's top logits do not depend on the rows batched with it (to float32 noise)
    assert float((alone[top[5]] - got[5, top[5]]).abs().max()) < 1e-5 and int(alone.argmax()) == int(got[5].argmax())
