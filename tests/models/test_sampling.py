"""Sampling through transformers' logits processors (issue 29): the same choices as ``model.generate``."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tenfold.models.sampling import PresenceFrequencyPenalty, Sampler


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=128)
    return LlamaForCausalLM(cfg).eval()


def _loop(model, prompt: list[int], sampler: Sampler, steps: int, generator=None) -> list[int]:
    out = []
    with torch.no_grad():
        for _ in range(steps):
            logits = model(input_ids=torch.tensor([prompt + out])).logits[0, -1]
            out.append(sampler(logits, prompt, out, generator))
    return out


@pytest.mark.parametrize("penalty", [1.0, 1.5, 0.7])
def test_greedy_with_repetition_penalty_equals_generate(tiny, penalty):
    prompt = [3, 9, 9, 4, 17, 3]
    want = tiny.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, repetition_penalty=penalty,
                         pad_token_id=0, eos_token_id=None)[0, len(prompt):].tolist()
    assert _loop(tiny, prompt, Sampler(repetition_penalty=penalty), 12) == want


def test_sampling_with_warpers_equals_generate_with_the_same_seed(tiny):
    prompt = [5, 6, 7]
    settings = dict(temperature=0.8, top_k=10, top_p=0.9, min_p=0.05)
    torch.manual_seed(11)
    want = tiny.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=True, pad_token_id=0,
                         eos_token_id=None, **settings)[0, len(prompt):].tolist()
    torch.manual_seed(11)
    got = _loop(tiny, prompt, Sampler(**settings), 10)
    assert got == want


def test_presence_and_frequency_penalties_follow_openai():
    scores = torch.zeros(1, 6)
    ids = torch.tensor([[5, 1, 2, 2, 2, 0]])  # the prompt [5] then 5 generated tokens: 1 once, 2 three times, 0 once
    out = PresenceFrequencyPenalty(0.5, 0.25, generated=5)(ids, scores)[0]
    assert out.tolist() == [-0.75, -0.75, -1.25, 0.0, 0.0, 0.0]  # the prompt's 5 is not penalised


@pytest.mark.parametrize("kw", [dict(temperature=-1), dict(top_p=0), dict(top_k=-1), dict(min_p=2),
                                dict(repetition_penalty=0)])
def test_bad_settings_raise(kw):
    with pytest.raises(ValueError):
        Sampler(**kw)


def test_tiny_positive_temperature_is_finite_and_greedy_like():
    """logits / 1e-300 overflowed to inf and softmax to NaN (torch.multinomial raised); now it samples at 0.01."""
    logits = torch.tensor([1.0, 3.0, 2.0, -1.0])
    for t in (1e-300, 5e-324, 1e-9):
        assert Sampler(temperature=t)(logits, generator=torch.Generator().manual_seed(0)) == 1


@pytest.mark.parametrize("settings", [dict(repetition_penalty=1e-300), dict(repetition_penalty=0.05),
                                      dict(repetition_penalty=11.0), dict(repetition_penalty=float("nan")),
                                      dict(presence_penalty=float("nan")), dict(frequency_penalty=float("inf")),
                                      dict(temperature=float("inf")), dict(temperature=float("nan"))])
def test_settings_that_make_scores_non_finite_are_refused(settings):
    with pytest.raises(ValueError):
        Sampler(**settings)


def test_running_state_equals_processors_over_the_whole_history():
    """A sequence's SamplingState keeps the penalties' inputs as running totals; at every step its scores equal
    transformers' processors applied to the whole prompt + answer (what each token used to rebuild)."""
    sampler = Sampler(repetition_penalty=1.3, presence_penalty=0.4, frequency_penalty=0.2)
    prompt, answer = [3, 9, 9, 4], [9, 1, 1, 7, 3, 1, 30]
    state = sampler.start(prompt)
    gen = torch.Generator().manual_seed(0)
    for step, token in enumerate(answer):
        logits = torch.randn(32, generator=gen)
        ids = torch.tensor([prompt + answer[:step]])
        want = sampler.processors(step)(ids, logits.reshape(1, -1).clone())
        assert torch.equal(state.penalised_scores(logits), want)
        assert state.sample(logits) == int(want.argmax()) == sampler(logits, prompt, answer[:step])
        state.accept(token)
    assert state.seen == set(prompt + answer)
    assert state.counts == {9: 1, 1: 3, 7: 1, 3: 1, 30: 1}
