import pytest
import torch
from transformers import DynamicCache

from tenfold.errors import TenfoldError
from tenfold.streaming import SinkCache, enable_streaming, prefill
from tenfold.streaming.rope import find_rotary

from .conftest import FAMILIES, HYBRIDS, peaky, tiny


@pytest.fixture(autouse=True)
def _inference_only():
    """No autograd in this module's tests (scoped: a module-level switch would leak into every later test)."""
    with torch.no_grad():
        yield


def test_rerotated_keys_equal_keys_computed_at_new_positions(family_model):
    name, model = family_model
    enable_streaming(model)
    ids = torch.randint(1, 128, (1, 40))
    cache = SinkCache(num_sinks=3, window=9, rerotate=True)
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


@pytest.mark.parametrize("rerotate", [True, False])
def test_positions_stay_bounded_during_generate(rerotate):
    """Re-rotating: in-cache positions, below the cache size; ring: frame positions, below ``rebase_at``."""
    model = tiny("llama")
    enable_streaming(model)
    seen = []
    rotary = find_rotary(model)
    handle = rotary.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(int(kwargs.get("position_ids", args[-1]).max())), with_kwargs=True)
    cache = SinkCache(4, 12, prefill_chunk=5, rerotate=rerotate)
    ids = torch.randint(1, 128, (1, 50))  # 3x the cache
    out = model.generate(ids, attention_mask=torch.ones_like(ids), cache=cache, max_new_tokens=80, do_sample=False)
    handle.remove()
    assert out.shape[1] == 130 and max(seen) < (cache.size if rerotate else cache.rebase_at)
    assert cache.fill() == cache.size and cache.tokens_seen == 129
    assert cache.rebases == 0 if rerotate else cache.rebases >= 4  # 80 decode steps past a 32-position frame


def _stream_nll(model, ids, mask, cache, steps):
    """Per-token NLL (B, T-1) streaming ``ids`` through ``cache`` in steps of the given sizes (cycled)."""
    logp, start, i = [], 0, 0
    length = ids.shape[1]
    while start < length - 1:
        q = min(steps[i % len(steps)], length - 1 - start)
        i += 1
        logits = model(input_ids=ids[:, start : start + q], attention_mask=mask[:, : start + q], cache=cache).logits
        logp.append(torch.log_softmax(logits.float(), -1).gather(-1, ids[:, start + 1 : start + q + 1, None])[..., 0])
        start += q
    return -torch.cat(logp, dim=1)


@pytest.mark.parametrize("family", FAMILIES + HYBRIDS)
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("steps", [(1,), (5, 1, 1, 3, 1)], ids=["decode", "chunks+decode"])
def test_ring_eviction_equals_rerotating_eviction(family, padded, steps):
    """Issue 25: no window re-rotation, same scores: NLL within 1e-4 over 7 windows and several re-bases; for the
    hybrids (issue 37) in both layer kinds."""
    model = enable_streaming(peaky(family, 4.0) if family in HYBRIDS else tiny(family))
    torch.manual_seed(1)
    ids = torch.randint(1, 128, (2, 100))
    mask = torch.ones_like(ids)
    if padded:
        ids[1, :7], mask[1, :7] = 0, 0
    got = {}
    for rerotate in (True, False):
        cache = SinkCache(num_sinks=3, window=10, rerotate=rerotate)
        got[rerotate] = _stream_nll(model, ids, mask, cache, steps)
        if not rerotate:
            ring = cache
    real = mask[:, 1:].bool()
    torch.testing.assert_close(got[False][real], got[True][real], atol=1e-4, rtol=0)
    assert ring.rebases >= 3, ring.rebases
    assert family not in HYBRIDS or len(ring.sliding_layers) >= 2


def test_ring_slots_are_reused_and_nothing_is_rotated_on_a_decode_step():
    model = enable_streaming(tiny("llama"))
    cache = SinkCache(2, 6)
    prefill(model, cache, torch.randint(1, 128, (1, 8)), chunk=1)
    assert cache.fill() == 8 and cache.frame == 8 and cache.head == 0
    before = cache.layers[0].keys[:, :, 2:8].clone()
    model(input_ids=torch.randint(1, 128, (1, 1)), cache=cache)
    keys = cache.layers[0].keys
    assert cache.head == 1 and cache.frame == 9 and cache.sink_delta == 1 and cache.fill() == 8
    torch.testing.assert_close(keys[:, :, 3:8], before[:, :, 1:])  # the window did not move or rotate
    assert not torch.equal(keys[:, :, 2], before[:, :, 0])  # the oldest recent slot now holds the new token


def test_a_ring_cache_copy_continues_like_the_original():
    model = enable_streaming(tiny("qwen3"))
    cache = SinkCache(2, 6)
    prefill(model, cache, torch.randint(1, 128, (1, 11)), chunk=1)
    assert cache.head != 0 and cache.sink_delta != 0
    twin = cache.copy()
    x = torch.randint(1, 128, (1, 1))
    torch.testing.assert_close(model(input_ids=x, cache=twin).logits, model(input_ids=x, cache=cache).logits)


@pytest.mark.parametrize("family", ["llama", *HYBRIDS])
def test_left_padded_batch_rows_equal_their_single_runs(family):
    model = enable_streaming(peaky(family, 4.0) if family in HYBRIDS else tiny(family))
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
        assert torch.equal(out[i, width:], singles[i]), f"{family}: row {i} differs from its batch-1 output"


def test_manual_prefill_of_a_long_input_evicts_between_chunks():
    model = tiny("qwen2")
    cache = SinkCache(4, 16)
    logits = prefill(model, cache, torch.randint(1, 128, (1, 100)))
    assert logits.shape[1] == (100 - 1) % cache.prefill_chunk + 1 and cache.fill() <= cache.size
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
    assert cache.fill().numel() == 0 and cache.tokens_seen.numel() == 0
    prefill(model, cache, torch.randint(1, 128, (3, 20)))
    assert cache.valid.shape[0] == 3 and bool((cache.fill() <= cache.size).all())


def test_a_long_ring_stream_matches_recomputing_the_kept_tokens():
    """3,000 decode steps (about 200 re-bases, 3,000 sink placements): with one layer, the next-token logits
    depend only on the kept tokens' layer-0 keys and values, so recomputing sinks + window from scratch at
    in-cache positions must give the same logits: no rounding accumulates over a stream."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from .conftest import COMMON

    torch.manual_seed(0)
    model = enable_streaming(LlamaForCausalLM(LlamaConfig(**{**COMMON, "num_hidden_layers": 1})).eval())
    ids = torch.randint(1, 128, (1, 3000))
    cache = SinkCache(4, 12)
    for t in range(ids.shape[1]):
        logits = model(input_ids=ids[:, t : t + 1], cache=cache).logits
    assert cache.rebases > 100 and cache.frame < cache.rebase_at
    kept = torch.cat([ids[:, :4], ids[:, -12:]], dim=1)
    fresh = model(input_ids=kept, cache=DynamicCache()).logits[:, -1]
    torch.testing.assert_close(logits[:, -1], fresh, atol=1e-4, rtol=0)


@pytest.mark.parametrize("family", ["llama-dynamic", "phi3-longrope"])
@pytest.mark.parametrize("window, steps", [(20, [1] * 90), (28, [5, 7, 3] * 6 + [1] * 20 + [6, 2] * 5)],
                         ids=["decode", "chunks-cache-equal-to-the-context"])
def test_ring_frame_positions_stay_inside_the_rope_original_context(family, window, steps):
    """Review 25: RoPE types that change their frequencies past the model's original context (dynamic NTK,
    LongRoPE) saw the ring's frame positions (up to ``rebase_at`` = 2x the cache) pass that context while every
    in-cache position stayed inside it: keys were then written with other frequencies than the cached ones and the
    ring drifted from the re-rotating reference from that step on. The ring re-bases before the limit instead."""
    from transformers import LlamaConfig, LlamaForCausalLM, Phi3Config, Phi3ForCausalLM

    torch.manual_seed(0)
    common = dict(vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2)
    if family == "llama-dynamic":
        model = LlamaForCausalLM(LlamaConfig(**common, max_position_embeddings=32, rope_parameters={
            "rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}))
    else:
        model = Phi3ForCausalLM(Phi3Config(**common, max_position_embeddings=256, original_max_position_embeddings=32,
                                           pad_token_id=0, rope_parameters={
            "rope_type": "longrope", "rope_theta": 10000.0, "short_factor": [1.0] * 4, "long_factor": [4.0] * 4,
            "original_max_position_embeddings": 32, "factor": 8.0, "partial_rotary_factor": 1.0}))
    model = enable_streaming(model.eval())
    ids = torch.randint(0, 100, (1, sum(steps)))
    # in-cache positions stay below 4 + window <= 32, the original context; so must the ring's frame positions,
    # also when chunks are fed into a cache as large as that context
    ring, reference = SinkCache(4, window), SinkCache(4, window, rerotate=True)
    start = 0
    for q in steps:
        a = model(input_ids=ids[:, start : start + q], cache=ring).logits[:, -1]
        b = model(input_ids=ids[:, start : start + q], cache=reference).logits[:, -1]
        start += q
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"at token {start}, frame {ring.frame}")
        assert ring.frame <= 32
    assert ring.rebases > 0


def test_counters_are_per_row_in_a_left_padded_batch():
    """Issue 37: tokens_seen, evicted and fill() count every row, not row 0 only (each as if the row ran alone)."""
    model = enable_streaming(tiny("llama"))
    prompts = [torch.randint(1, 128, (n,)) for n in (5, 23, 40)]
    width = max(p.numel() for p in prompts)
    batch, mask = torch.zeros((3, width), dtype=torch.long), torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - p.numel():], mask[i, width - p.numel():] = p, 1
    cache = SinkCache(2, 10, prefill_chunk=4)
    prefill(model, cache, batch, attention_mask=mask)
    singles = []
    for p in prompts:
        alone = SinkCache(2, 10, prefill_chunk=4)
        prefill(model, alone, p[None])
        singles.append((int(alone.tokens_seen[0]), int(alone.evicted[0]), int(alone.fill()[0])))
    assert cache.tokens_seen.tolist() == [5, 23, 40] == [s[0] for s in singles]
    assert cache.evicted.tolist() == [s[1] for s in singles] == [0, 23 - 12, 40 - 12]
    assert cache.fill().tolist() == [s[2] for s in singles] == [5, 12, 12]
