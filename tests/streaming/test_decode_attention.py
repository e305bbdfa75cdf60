"""The CPU decode fast path gives the same logits as transformers' SDPA (and hands everything else to it)."""
import pytest
import torch
from transformers import DynamicCache

from tenfold.models.decode_attention import DECODE_ATTENTION
from tenfold.streaming import SinkCache, enable_streaming

from .conftest import tiny


@pytest.fixture(autouse=True)
def _inference_only():
    """No autograd in this module's tests (scoped: a module-level switch would leak into every later test)."""
    with torch.no_grad():
        yield


def _decode(model, ids, mask, cache):
    out = [model(input_ids=ids[:, :-4], attention_mask=mask[:, :-4], cache=cache).logits[:, -1:]]
    for t in range(ids.shape[1] - 4, ids.shape[1]):
        out.append(model(input_ids=ids[:, t : t + 1], attention_mask=mask[:, : t + 1], cache=cache).logits)
    return torch.cat(out, 1).float()


@pytest.mark.parametrize("family", ["llama", "qwen3", "phi3"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_decode_attention_matches_sdpa_with_padding(family, dtype):
    model = tiny(family).to(dtype)
    ids = torch.randint(1, 128, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding in row 1
    model.set_attn_implementation("sdpa")
    ref = _decode(model, ids, mask, DynamicCache())
    model.set_attn_implementation(DECODE_ATTENTION)
    got = _decode(model, ids, mask, DynamicCache())
    tol = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(got, ref, atol=tol, rtol=0)


def test_decode_attention_with_sink_cache_past_the_window():
    model = tiny("llama").to(torch.float16)
    ids = torch.randint(1, 128, (1, 30))
    results = []
    for impl in ("sdpa", DECODE_ATTENTION):
        model.set_attn_implementation(impl)
        enable_streaming(model)
        cache = SinkCache(2, 8)
        results.append(torch.cat([model(input_ids=ids[:, t : t + 1], cache=cache).logits for t in range(30)], 1).float())
    torch.testing.assert_close(results[1], results[0], atol=2e-2, rtol=0)


def test_bundled_model_loads_with_decode_attention(lm):
    model, _ = lm
    assert model.config._attn_implementation == DECODE_ATTENTION
