"""Held-out accuracy with ``M_inf`` pauses at inference (Goyal et al. 2023, Sec. 3.3 and Fig. 4).

Prompts are left-padded into batches, ``m_inf`` pauses are appended, ``generate`` decodes greedily with the
pause logit masked (:class:`SuppressPause`) and the text after the last pause, up to the end token, is the
answer; a prediction counts when it equals the reference exactly (after stripping spaces).
"""
from __future__ import annotations

import torch
from transformers import LogitsProcessorList

from tenfold.errors import TenfoldError
from tenfold.pause.inference import SuppressPause
from tenfold.pause.tokens import pause_id


@torch.no_grad()
def predict(model, tokenizer, prompts: list[str], m_inf: int, max_new_tokens: int = 12,
            batch_size: int = 64) -> list[str]:
    if not isinstance(m_inf, int) or m_inf < 0:
        raise TenfoldError(f"m_inf must be an integer >= 0 (got {m_inf!r})")
    pause = pause_id(tokenizer) if m_inf > 0 else None
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    processors = LogitsProcessorList([SuppressPause(pause_id(tokenizer))]) if _has_pause(tokenizer, model) else None
    encoded = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    out = []
    for i in range(0, len(encoded), batch_size):
        rows = [ids + [pause] * m_inf for ids in encoded[i:i + batch_size]]
        width = max(len(r) for r in rows)
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows], device=model.device)
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], device=model.device)
        gen = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
                             logits_processor=processors, eos_token_id=eos, pad_token_id=pad)
        for row in gen[:, width:].tolist():
            if eos in row:
                row = row[: row.index(eos)]
            out.append(tokenizer.decode(row, skip_special_tokens=True))
    return out


def _has_pause(tokenizer, model) -> bool:
    try:
        return pause_id(tokenizer) < model.get_input_embeddings().weight.shape[0]
    except TenfoldError:
        return False


def accuracy(model, tokenizer, pairs: list[tuple[str, str]], m_inf: int, **kwargs) -> float:
    if not pairs:
        raise TenfoldError("no examples to evaluate")
    preds = predict(model, tokenizer, [p for p, _ in pairs], m_inf, **kwargs)
    return sum(p.strip() == a.strip() for p, (_, a) in zip(preds, pairs)) / len(pairs)
