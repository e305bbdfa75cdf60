"""Issue 37: hybrid models (sliding-window layers beside full-attention ones; learned sinks) stream exactly.

Full-attention layers keep sinks + window (StreamingLLM); sliding-window layers keep what the model was trained to see,
their own last ``sliding_window`` tokens at true distances with their own RoPE base. Tiny random Gemma 3 and gpt-oss
configurations, built locally, carry the mechanics; the real Gemma 3 270M is tested in test_gemma3_real.py.
"""
import pytest
import torch
from transformers import DynamicCache

from tenfold.errors import TenfoldError
from tenfold.streaming import SinkCache, enable_streaming, prefill
from tenfold.streaming.perplexity import perplexity
from tenfold.streaming.config import SinkConfig

from .conftest import HYBRIDS, SLIDING_WINDOW, tiny
from .test_sink_cache import _stream_nll


@pytest.fixture(autouse=True)
def _inference_only():
    with torch.no_grad():
        yield


def _peaky(family):
    model = tiny(family)
    for p in model.parameters():
        if p.ndim == 2:
            p.mul_(4)  # so that any change in what a token attends to moves its loss
    return model


@pytest.fixture(params=HYBRIDS)
def hybrid(request):
    return request.param, _peaky(request.param)


@pytest.mark.parametrize("steps", [(1,), (5, 1, 1, 3, 1)], ids=["decode", "chunks+decode"])
def test_equal_to_the_models_own_dense_cache_while_full_layers_evict_nothing(hybrid, steps):
    """Sliding layers evict (the stream is 4x their window) while the full layers hold everything: the output is
    exactly the model's own (transformers' DynamicCache with its sliding-window layers)."""
    name, model = hybrid
    enable_streaming(model)
    ids = torch.randint(1, 128, (1, 4 * SLIDING_WINDOW))
    mask = torch.ones_like(ids)
    ours = _stream_nll(model, ids, mask, SinkCache(2, 4 * SLIDING_WINDOW), steps)
    dense = _stream_nll(model, ids, mask, DynamicCache(config=model.config), steps)
    torch.testing.assert_close(ours, dense, atol=1e-4, rtol=0)


@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "left-padded"])
@pytest.mark.parametrize("steps", [(1,), (5, 1, 1, 3, 1)], ids=["decode", "chunks+decode"])
def test_ring_equals_rerotating_eviction(hybrid, padded, steps):
    """The ring buffer (frame positions, re-based) and the re-rotating path agree to 1e-4 in NLL over 7 windows,
    in both layer kinds, with and without left padding."""
    name, model = hybrid
    enable_streaming(model)
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
    assert ring.rebases >= 3 and len(ring.sliding_layers) >= 2


def test_left_padded_rows_equal_their_single_runs(hybrid):
    name, model = hybrid
    enable_streaming(model)
    prompts = [torch.randint(1, 128, (n,)) for n in (7, 19, 30)]
    singles = []
    for p in prompts:
        out = model.generate(p[None], attention_mask=torch.ones(1, p.numel(), dtype=torch.long),
                             cache=SinkCache(2, 10, prefill_chunk=4), max_new_tokens=16, do_sample=False)
        singles.append(out[0, p.numel():])
    width = max(p.numel() for p in prompts)
    batch, mask = torch.zeros((3, width), dtype=torch.long), torch.zeros((3, width), dtype=torch.long)
    for i, p in enumerate(prompts):
        batch[i, width - p.numel():], mask[i, width - p.numel():] = p, 1
    out = model.generate(batch, attention_mask=mask, cache=SinkCache(2, 10, prefill_chunk=4), max_new_tokens=16,
                         do_sample=False, pad_token_id=0)
    for i in range(3):
        assert torch.equal(out[i, width:], singles[i]), f"{name}: row {i} differs from its batch-1 output"


def test_sliding_layers_hold_their_window_and_no_more(hybrid):
    name, model = hybrid
    enable_streaming(model)
    cache = SinkCache(2, 20, prefill_chunk=5)
    prefill(model, cache, torch.randint(1, 128, (1, 60)))
    for _ in range(9):
        model(input_ids=torch.randint(1, 128, (1, 1)), cache=cache)
    assert all(layer.n == SLIDING_WINDOW for layer in cache.sliding_layers)
    assert all(layer.n == 22 for layer in cache.full_layers)
    assert cache.fill().tolist() == [22] and cache.tokens_seen.tolist() == [69] and cache.evicted.tolist() == [47]


@pytest.mark.parametrize("family", HYBRIDS)
@pytest.mark.parametrize("sinks, window, block", [(3, 12, 7), (1, 5, 64), (4, 20, 1)])
def test_blocked_equals_stepwise(family, sinks, window, block):
    model = _peaky(family)
    ids = torch.randint(1, 128, (2, 70))
    step = perplexity(model, ids, "sink", SinkConfig(sinks, window))
    fast = perplexity(model, ids, "sink", SinkConfig(sinks, window), blocked=True, block=block)
    dense = perplexity(model, ids, "dense", SinkConfig(sinks, window))
    assert abs(step.nll - dense.nll).max() > 0.1  # the methods really differ on this model...
    assert abs(step.nll - fast.nll).max() < 1e-4  # ...and blocked is stepwise, to rounding


def test_unsupported_layer_types_are_refused_by_name():
    model = tiny("llama")
    model.config.layer_types = ["full_attention", "chunked_attention"]
    with pytest.raises(TenfoldError, match="'chunked_attention' layers.*chunk boundaries"):
        enable_streaming(model)
    model = tiny("llama")
    model.config.layer_types = ["linear_attention", "full_attention"]
    with pytest.raises(TenfoldError, match="'linear_attention' layers"):
        enable_streaming(model)


def test_continuous_batching_rows_equal_their_single_runs(hybrid):
    """Serve's batched decode step (one forward for every row, each row attending to its own cache, learned sinks
    and sliding windows included) gives each row what it would get alone."""
    from tenfold.serve.batching import decode_rows, enable_row_batching

    name, model = hybrid
    before = model.config._attn_implementation
    prompts = [torch.randint(1, 128, (1, n)) for n in (5, 17, 31)]

    def run(batched: bool):
        caches = [SinkCache(2, 10, prefill_chunk=4) for _ in prompts]
        logits = [prefill(model, c, p, logits_to_keep=1)[0, -1] for c, p in zip(caches, prompts)]
        out = [[] for _ in prompts]
        for _ in range(12):
            tokens = [int(l.argmax()) for l in logits]
            for row, t in zip(out, tokens):
                row.append(t)
            if batched:
                logits = list(decode_rows(model, caches, tokens))
            else:
                logits = [model(input_ids=torch.tensor([[t]]), cache=c).logits[0, -1] for c, t in zip(caches, tokens)]
        return out, logits

    enable_streaming(model)
    alone, last_alone = run(False)  # the model's own attention (sdpa / gpt-oss's eager with its sinks)
    enable_row_batching(model)
    together, last_together = run(True)
    assert together == alone, name
    for a, b in zip(last_alone, last_together):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    assert before != model.config._attn_implementation  # the batched path really ran tenfold's attention
