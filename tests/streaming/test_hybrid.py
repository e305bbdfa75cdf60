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

from .conftest import SLIDING_WINDOW, tiny
from .test_sink_cache import _stream_nll


@pytest.fixture(autouse=True)
def _inference_only():
    with torch.no_grad():
        yield


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
