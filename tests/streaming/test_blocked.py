"""Blocked evaluation gives the numbers of one-token-per-step streaming through the sink cache."""
import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.streaming.blocked import blocked_nll
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.perplexity import perplexity

from .conftest import HYBRIDS, peaky


@pytest.fixture(autouse=True)
def _inference_only():
    """No autograd in this module's tests (scoped: a module-level switch would leak into every later test)."""
    with torch.no_grad():
        yield


@pytest.mark.parametrize("family", ["llama", "llama-linear-scaling", "qwen3", "phi3", *HYBRIDS])
@pytest.mark.parametrize("sinks, window, block", [(3, 12, 7), (1, 5, 64), (4, 20, 1)])
def test_blocked_equals_stepwise_sink(family, sinks, window, block):
    model = peaky(family, 4.0 if family in HYBRIDS else 8.0)
    ids = torch.randint(1, 128, (2, 70))
    step = perplexity(model, ids, "sink", SinkConfig(sinks, window))
    fast = perplexity(model, ids, "sink", SinkConfig(sinks, window), blocked=True, block=block)
    dense = perplexity(model, ids, "dense", SinkConfig(sinks, window))
    assert abs(step.nll - dense.nll).max() > 0.1  # the methods really differ on this model...
    assert abs(step.nll - fast.nll).max() < 1e-4  # ...and blocked is stepwise, to rounding


def test_blocked_equals_stepwise_window_and_short_streams():
    model = peaky("qwen2")
    ids = torch.randint(1, 128, (1, 50))
    for tokens in (50, 16, 15, 3):
        step = perplexity(model, ids[:, :tokens], "window", SinkConfig(4, 11))
        fast = perplexity(model, ids[:, :tokens], "window", SinkConfig(4, 11), blocked=True, block=5)
        assert step.nll.shape == fast.nll.shape
        assert abs(step.nll - fast.nll).max() < 1e-4


def test_blocked_restores_the_attention_implementation_and_rejects_bad_blocks():
    model = peaky("llama")
    before = model.config._attn_implementation
    ids = torch.randint(1, 128, (1, 30))
    blocked_nll(model, ids, 2, 6)
    assert model.config._attn_implementation == before
    with pytest.raises(TenfoldError):
        perplexity(model, ids, "sink", SinkConfig(2, 6), blocked=True, block=0)


@pytest.mark.slow
def test_blocked_equals_stepwise_on_the_bundled_model(lm):
    from tenfold.data import austen

    model, tok = lm
    ids = tok(austen("emma")[:6000], return_tensors="pt").input_ids[:, :400]
    step = perplexity(model, ids, "sink", SinkConfig(4, 60))
    fast = perplexity(model, ids, "sink", SinkConfig(4, 60), blocked=True, block=128)
    assert abs(step.nll - fast.nll).max() < 2e-3 and abs(step.ppl / fast.ppl - 1) < 1e-4
