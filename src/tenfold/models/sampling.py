"""Next-token choice: greedy at temperature 0, otherwise temperature + nucleus (top-p) sampling."""
from __future__ import annotations

import torch


def sample_next(logits: torch.Tensor, temperature: float = 0.0, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> int:
    """One token id from a (V,) logits vector."""
    if temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, order = probs.sort(descending=True)
        keep = sorted_p.cumsum(0) - sorted_p < top_p  # always keeps the most likely token
        sorted_p = sorted_p * keep
        return int(order[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=generator)])
    return int(torch.multinomial(probs, 1, generator=generator))


def stop_token_ids(tokenizer, model=None) -> set[int]:
    """End-of-sequence ids: the tokenizer's EOS, the model's generation config EOS(es) and ChatML's end of turn."""
    ids = {tokenizer.eos_token_id, tokenizer.get_vocab().get("<|im_end|>")}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, (list, tuple)) else [eos])
    return {i for i in ids if isinstance(i, int) and i >= 0}
