"""Batches for pause-pretraining and pause-finetuning (Goyal et al. 2023, Sec. 3.1-3.2).

Labels follow transformers' causal-LM convention (the model shifts them); -100 is ignored.
Pretraining: pauses inserted by :func:`insert_pauses`; wherever the token to predict is a pause
the label is -100, so the model is never trained to output pauses. Fine-tuning: the prompt, then
``m_ft`` pauses, then the answer; loss on the answer (and its end token) only.
"""
from __future__ import annotations

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.models.finetune import IGNORE, answer_only_batch
from tenfold.pause.tokens import insert_pauses


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)


class PausePretrainCollator:
    """``collator(list of token-id lists)`` -> input_ids, attention_mask, labels (right padded)."""

    def __init__(self, pause: int, pad: int, rate: float = 0.1, seed: int = 0):
        self.pause, self.pad, self.rate = pause, pad, rate
        self.rng = np.random.default_rng(seed)

    def __call__(self, sequences: list[list[int]]) -> dict:
        if not sequences or any(len(s) == 0 for s in sequences):
            raise TenfoldError("pretraining batches need non-empty token sequences")
        rows = [insert_pauses(list(s), self.pause, self.rate, self.rng) for s in sequences]
        ids = _pad(rows, self.pad)
        mask = _pad([[1] * len(r) for r in rows], 0)
        labels = ids.masked_fill((ids == self.pause) | (mask == 0), IGNORE)
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class PauseFinetuneCollator:
    """``collator(list of (prompt ids, answer ids))``: prompt + m_ft pauses + answer + end; loss on the answer."""

    def __init__(self, pause: int, pad: int, m_ft: int = 10, end: int | None = None):
        if not isinstance(m_ft, int) or m_ft < 0:
            raise TenfoldError(f"m_ft must be an integer >= 0 (got {m_ft!r})")
        self.pause, self.pad, self.m_ft, self.end = pause, pad, m_ft, end

    def __call__(self, pairs: list[tuple[list[int], list[int]]]) -> dict:
        batch = []
        for prompt, answer in pairs:
            if not answer:
                raise TenfoldError("every fine-tuning example needs a non-empty answer")
            end = [self.end] if self.end is not None else []
            batch.append((list(prompt) + [self.pause] * self.m_ft, list(answer) + end))
        return answer_only_batch(batch, self.pad)
