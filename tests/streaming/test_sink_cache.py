import pytest
import torch
from transformers import DynamicCache

from tenfold.errors import TenfoldError
from tenfold.streaming import SinkCache, enable_streaming, prefill
from tenfold.streaming.rope import find_rotary

from .conftest import tiny


@pytest.fixture(autouse=True)
def _inference_only():
    """No autograd in this module's tests (scoped: a module-level switch would leak into every later test)."""
    with torch.no_grad():
        yield


def test_rerotated_keys_equal_keys_computed_at_new_positions(family_model):
    name, model = family_model
    enable_streaming(model)
    ids = torch.randint(1, 128, (1, 40))
    cache = SinkCache(num_sinks=3, window=9)
    for t in range(40):
        model(input_ids=ids[:, t : t + 1], cache=cache)
    n = cache.layers[0].n
    assert n == 12 and cache.evicted == 40 - 12
    kept = list(range(3)) + list(range(40 - (n - 3), 40))
    fresh = DynamicCache()
    model(input_ids=ids[:, kept], cache=fresh)
    # Layer 0's keys depend only on each token and its position: eviction + re-rotation must match.
    torch.testing.assert_close(cache.layers[0].keys[:, :, :n], fresh.layers[0].keys, atol=1e-4, rtol=0)


def test_identical_to_dense_cache_before_anything_is_evicted(family_model):
    name, model = family_model
    enable_streaming(model)
    ids = torch.randint(1, 128, (1, 15))
    sink, dense = SinkCache(2, 30), DynamicCache()
    for t in range(15):
        a = model(input_ids=ids[:, t : t + 1], cache=sink).logits
        b = model(input_ids=ids[:, t : t + 1], cache=dense).logits
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_positions_stay_below_cache_size_during_generate():
    model = tiny("llama")
    enable_streaming(model)
    seen = []
    rotary = find_rotary(model)
    handle = rotary.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(int(kwargs.get("position_ids", args[-1]).max())), with_kwargs=True)
    cache = SinkCache(4, 12, prefill_chunk=5)
    ids = torch.randint(1, 128, (1, 50))  # 3x the cache
    out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=20, do_sample=False)
    handle.remove()
    assert out.shape[1] == 70 and max(seen) < cache.size
    assert cache.fill() == cache.size and cache.tokens_seen == 69


def test_left_padded_batch_rows_equal_their_single_runs():
    model = tiny("llama")
    enable_streaming(model)
    prompts = [torch.randint(1, 128, (n,)) for n in (7, 19, 30)]
    singles = []
    for p in prompts:
        out = model.generate(p[None], attention_mask=torch.ones(1, p.numel(), dtype=torch.long),
                             cache=SinkCache(2, 10, prefill_chunk=4), max_new_tokens=16, do_sample=False)
        singles.append(out[0, p.numel():])
    width = max(p.numel() for p in prompts)
    batch = torch.zeros((3, width), dtype=torch.long)
    mask = torch.zeros_like(batch)
    for i, p in enumerate(prompts):
        batch[i, width - p.numel():], mask[i, width - p.numel():] = p, 1
    out = model.generate(batch, attention_mask=mask, cache=SinkCache(2, 10, prefill_chunk=4), max_new_tokens=16,
                         do_sample=False, pad_token_id=0)
    for i in range(3):
        assert torch.equal(out[i, width:], singles[i]), f"row {i} differs from its batch-1 output"


def test_manual_prefill_of_a_long_input_evicts_between_chunks():
    model = tiny("qwen2")
    cache = SinkCache(4, 16)
    logits = prefill(model, cache, torch.randint(1, 128, (1, 100)))
    assert logits.shape[1] == cache.prefill_chunk and cache.fill() <= cache.size
    assert cache.layers[0].capacity <= cache.size + cache.prefill_chunk


@pytest.mark.parametrize("kwargs,match", [({"window": 0}, "window"), ({"num_sinks": -1}, "num_sinks"),
                                          ({"num_sinks": 8, "window": 4}, "smaller than num_sinks"),
                                          ({"window": 8, "prefill_chunk": 9}, "prefill_chunk")])
def test_bad_cache_settings_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SinkCache(**kwargs)


def test_model_without_rope_is_rejected():
    with pytest.raises(TenfoldError, match="rotary"):
        enable_streaming(tiny("gpt2"))


def test_unsupported_attention_is_rejected():
    model = tiny("llama")
    model.config._attn_implementation_internal = "flex_attention"
    with pytest.raises(TenfoldError, match="not supported"):
        enable_streaming(model)


def test_cache_without_streaming_hook_fails_loudly():
    model = tiny("mistral")
    with pytest.raises(RuntimeError, match="enable_streaming"):
        model(input_ids=torch.randint(1, 128, (1, 4)), cache=SinkCache(2, 8))


def test_a_step_longer_than_the_window_is_rejected_outside_generate():
    model = enable_streaming(tiny("llama"))
    with pytest.raises(ValueError, match="longer than the sink cache's window"):
        model(input_ids=torch.randint(1, 128, (1, 20)), cache=SinkCache(2, 8))


def test_reset_allows_a_new_batch_size():
    model = enable_streaming(tiny("llama"))
    cache = SinkCache(2, 6)
    prefill(model, cache, torch.randint(1, 128, (2, 20)))
    cache.reset()
    assert cache.fill() == 0 and cache.tokens_seen == 0
    prefill(model, cache, torch.randint(1, 128, (3, 20)))
    assert cache.valid.shape[0] == 3 and cache.fill() <= cache.size
