"""Inference with pauses (Goyal et al. 2023, Sec. 3.3): append ``m_inf`` pauses, read the output after the last.

The pause token is never emitted: :class:`SuppressPause` (a transformers ``LogitsProcessor``,
passed to ``generate``) sets its logit to -inf at every step.
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from tenfold.errors import TenfoldError


class SuppressPause(LogitsProcessor):
    def __init__(self, pause: int):
        self.pause = pause

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores[:, self.pause] = float("-inf")
        return scores


@torch.no_grad()
def generate_after_pauses(model, prompt_ids: list[int], pause: int, m_inf: int, max_new_tokens: int = 16,
                          eos: int | None = None, **generate_kwargs) -> list[int]:
    """Greedy (unless sampling arguments are given) answer tokens after ``prompt + m_inf`` pauses."""
    if not isinstance(m_inf, int) or m_inf < 0:
        raise TenfoldError(f"m_inf must be an integer >= 0 (got {m_inf!r})")
    ids = torch.tensor([list(prompt_ids) + [pause] * m_inf], device=model.device)
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                         logits_processor=LogitsProcessorList([SuppressPause(pause)]),
                         do_sample=generate_kwargs.pop("do_sample", False), eos_token_id=eos,
                         pad_token_id=eos if eos is not None else 0, **generate_kwargs)
    answer = out[0, ids.shape[1]:].tolist()
    if eos is not None and eos in answer:
        answer = answer[: answer.index(eos)]
    return answer
