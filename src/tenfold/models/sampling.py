"""Next-token choice through transformers' logits processors (the ones ``model.generate`` uses).

:class:`Sampler` chains, in ``generate``'s order: repetition penalty (prompt and generated tokens, as
transformers and vLLM apply it), OpenAI's presence / frequency penalties (generated tokens only, as vLLM does;
:class:`PresenceFrequencyPenalty`, a ``LogitsProcessor`` subclass: transformers has none), then the warpers
temperature, top-k, top-p and min-p. Temperature 0 is greedy: the penalties still apply, the warpers do not.

Numeric ranges keep every score finite (an infinite score turns the softmax into NaN): a temperature in
(0, :data:`MIN_TEMPERATURE`) samples at :data:`MIN_TEMPERATURE` (vLLM's rule), and the repetition penalty lies in
[1 / :data:`MAX_REPETITION_PENALTY`, :data:`MAX_REPETITION_PENALTY`] (dividing by 1e-300 overflows float32).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor

MIN_TEMPERATURE = 1e-2  # vLLM's _MAX_TEMP: smaller positive temperatures overflow the scores; they sample at this one
MAX_REPETITION_PENALTY = 10.0  # the repetition penalty lies in [1 / this, this]


def effective_temperature(temperature: float) -> float:
    """The temperature actually sampled at: 0 (greedy) stays 0, (0, MIN_TEMPERATURE) becomes MIN_TEMPERATURE."""
    return 0.0 if temperature <= 0 else max(float(temperature), MIN_TEMPERATURE)


class PresenceFrequencyPenalty(LogitsProcessor):
    """OpenAI's penalties: ``logit[t] -= presence * (count[t] > 0) + frequency * count[t]``, where ``count`` counts
    ``t`` among the generated tokens (the last ``generated`` columns of ``input_ids``). Scores (B, V) -> (B, V)."""

    def __init__(self, presence: float, frequency: float, generated: int):
        self.presence, self.frequency, self.generated = presence, frequency, generated

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generated == 0:
            return scores
        recent = input_ids[:, -self.generated:]
        counts = torch.zeros_like(scores).scatter_add_(1, recent, torch.ones_like(recent, dtype=scores.dtype))
        return self.apply(scores, counts)

    def apply(self, scores: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The penalties from ``counts`` (B, V) or (V,): how often each token was generated."""
        return scores - self.presence * (counts > 0).to(scores.dtype) - self.frequency * counts


@dataclass(frozen=True)
class Sampler:
    """Sampling settings; call with the (V,) logits of the next token.

    ``temperature`` 0 = greedy; ``top_k`` 0 = off; ``top_p`` 1 = off; ``min_p`` 0 = off; ``repetition_penalty`` 1 =
    off (> 1 discourages tokens already in the prompt or the answer; transformers' ``RepetitionPenaltyLogitsProcessor``);
    ``presence_penalty`` / ``frequency_penalty`` 0 = off (OpenAI's meaning, over the answer's tokens).
    Raises ValueError for settings out of range.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0

    def __post_init__(self):
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise ValueError(f"temperature must be a finite number >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (got {self.top_p})")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (got {self.top_k})")
        if not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p must be in [0, 1] (got {self.min_p})")
        low = 1 / MAX_REPETITION_PENALTY
        if not low <= self.repetition_penalty <= MAX_REPETITION_PENALTY:
            raise ValueError(f"repetition_penalty must be in [{low:g}, {MAX_REPETITION_PENALTY:g}] "
                             f"(got {self.repetition_penalty})")
        for name in ("presence_penalty", "frequency_penalty"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number (got {getattr(self, name)})")

    @property
    def penalised(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

    def processors(self, generated: int = 0, penalties: bool = True):
        """The ``LogitsProcessorList`` for one step, ``generated`` answer tokens at the end of the ids (what
        ``model.generate`` would chain); ``penalties=False`` leaves out the repetition / presence / frequency ones."""
        from transformers import (LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                  TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper)

        out = LogitsProcessorList()
        if penalties and self.repetition_penalty != 1:
            out.append(RepetitionPenaltyLogitsProcessor(self.repetition_penalty))
        if penalties and (self.presence_penalty or self.frequency_penalty):
            out.append(PresenceFrequencyPenalty(self.presence_penalty, self.frequency_penalty, generated))
        if self.temperature > 0:
            out.append(TemperatureLogitsWarper(effective_temperature(self.temperature)))
            if self.top_k > 0:
                out.append(TopKLogitsWarper(self.top_k))
            if self.top_p < 1:
                out.append(TopPLogitsWarper(self.top_p))
            if self.min_p > 0:
                out.append(MinPLogitsWarper(self.min_p))
        return out

    def start(self, prompt_ids: list[int] | None = None) -> "SamplingState":
        """The state of one sequence that continues ``prompt_ids`` (what the repetition penalty also covers): sample
        with :meth:`SamplingState.sample`, then :meth:`SamplingState.accept` each token the sequence keeps."""
        return SamplingState(self, prompt_ids)

    def __call__(self, logits: torch.Tensor, prompt_ids: list[int] | None = None, generated_ids: list[int] | None = None,
                 generator: torch.Generator | None = None) -> int:
        """One token id from (V,) ``logits``; ``prompt_ids`` and ``generated_ids`` feed the penalties. One-off: a
        loop that samples many tokens of one sequence keeps a :meth:`start` state instead (no work per past token)."""
        state = self.start(prompt_ids)
        for token in generated_ids or []:
            state.accept(token)
        return state.sample(logits, generator)


class SamplingState:
    """One sequence's sampling: the processors built once, and the penalties' inputs kept as running totals, so a
    step costs the same at the first token and the ten-thousandth (no tensor of the whole history per step).

    The repetition penalty reads the set of distinct ids seen (prompt and answer; transformers' processor gathers
    one score per id, so duplicates change nothing), the presence / frequency penalties a (V,) count of the answer's
    tokens. Equal to ``Sampler.processors(len(answer))`` applied to the whole ids (tested).
    """

    def __init__(self, sampler: Sampler, prompt_ids: list[int] | None = None):
        self.sampler = sampler
        self.warpers = sampler.processors(penalties=False)
        self.repetition = None
        if sampler.repetition_penalty != 1:
            from transformers import RepetitionPenaltyLogitsProcessor

            self.repetition = RepetitionPenaltyLogitsProcessor(sampler.repetition_penalty)
        self.presence = None
        if sampler.presence_penalty or sampler.frequency_penalty:
            self.presence = PresenceFrequencyPenalty(sampler.presence_penalty, sampler.frequency_penalty, 0)
        self.seen: set[int] = set(prompt_ids or []) if self.repetition is not None else set()
        self._seen_ids: torch.Tensor | None = None  # (1, len(seen)) long, rebuilt only when a new id arrives
        self.counts: dict[int, int] = {}  # answer token -> times generated (presence / frequency)
        self._counts: torch.Tensor | None = None  # (V,) float, created at the first step

    def accept(self, token: int) -> None:
        """Record ``token`` as the sequence's next answer token."""
        if self.repetition is not None and token not in self.seen:
            self.seen.add(token)
            self._seen_ids = None
        if self.presence is not None:
            self.counts[token] = self.counts.get(token, 0) + 1
            if self._counts is not None and token < self._counts.numel():
                self._counts[token] += 1

    def penalised_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """(1, V) float32 CPU scores of the (V,) ``logits`` after the repetition / presence / frequency penalties
        (before the warpers)."""
        # The processors and the draw run on the CPU with the caller's CPU generator: one row of logits is cheap to
        # move, and a seeded draw is then the same whichever device the model runs on.
        scores = logits.float().reshape(1, -1).cpu()
        if self.repetition is not None and self.seen:
            if self._seen_ids is None:
                self._seen_ids = torch.tensor([sorted(self.seen)], dtype=torch.long)
            scores = self.repetition(self._seen_ids, scores)
        if self.presence is not None and self.counts:
            if self._counts is None or self._counts.numel() != scores.shape[-1]:
                self._counts = torch.zeros(scores.shape[-1])
                for token, count in self.counts.items():
                    if token < scores.shape[-1]:
                        self._counts[token] = count
            scores = self.presence.apply(scores, self._counts)
        return scores

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """One token id from the (V,) ``logits`` of the next position (not recorded: call :meth:`accept`)."""
        sampler = self.sampler
        if sampler.temperature <= 0 and not sampler.penalised:
            return int(logits.argmax())
        scores = self.penalised_scores(logits)
        if sampler.temperature <= 0:
            return int(scores.argmax())
        scores = self.warpers(torch.empty((1, 0), dtype=torch.long), scores)
        probs = torch.softmax(scores, dim=-1)[0]
        return int(torch.multinomial(probs, 1, generator=generator))


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """One token id from a (V,) logits vector: greedy at temperature 0, else temperature + top-p (see :class:`Sampler`
    for top-k, min-p and penalties)."""
    return Sampler(temperature, top_p)(logits, generator=generator)


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS, the model's generation config EOS(es) and ChatML's end of turn."""
    ids = {tokenizer.eos_token_id, tokenizer.get_vocab().get("<|im_end|>")}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if isinstance(i, int) and i >= 0}
