"""The retrieval-augmented LM of RA-DIT (Lin et al. 2023, Sec. 2.1-2.2): prompts, answer likelihoods, REPLUG decoding.

Each retrieved chunk c is prepended to the question in its own prompt ("Background: c" then the question,
through the model's chat template). REPLUG-style ensembling (Shi et al. 2023, used by RA-DIT at inference)
runs the LM once per chunk and decodes from the mixture sum_c p_R(c|x) p_LM(y_t | c, x, y_<t), with p_R the
retriever scores renormalised over the top-k (softmax with a temperature). ``answer_logprob`` gives
log p_LM(y | c, x), the quantity LM-supervised retrieval turns into its target distribution.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tenfold.errors import TenfoldError
from tenfold.models.lm import chat_ids

INSTRUCTION = "Answer the question in a few words."


def prompt_ids(tokenizer, question: str, chunks: list[str] | None = None) -> list[int]:
    """The chat-formatted prompt: optional background chunks, then the question."""
    if not question.strip():
        raise TenfoldError("the question is empty")
    background = "".join(f"Background: {c}\n\n" for c in (chunks or []))
    messages = [{"role": "system", "content": INSTRUCTION},
                {"role": "user", "content": f"{background}Question: {question}"}]
    return chat_ids(tokenizer, messages)[0].tolist()


def answer_ids(tokenizer, answer: str) -> list[int]:
    """The answer's tokens followed by the end-of-turn token (the LM-ft target)."""
    return tokenizer(answer, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]


def tempered_softmax(values, temperature: float) -> np.ndarray:
    """softmax(values / temperature) along the last axis; rows sum to one."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise TenfoldError("nothing to normalise (no scores)")
    if not np.isfinite(v).all() or not temperature > 0:
        raise TenfoldError("scores must be finite and the temperature positive")
    z = v / temperature
    w = np.exp(z - z.max(axis=-1, keepdims=True))
    return w / w.sum(axis=-1, keepdims=True)


def ensemble_weights(scores, temperature: float = 0.1) -> np.ndarray:
    """p_R over the top-k: softmax(score / temperature) of the retriever's scores."""
    return tempered_softmax(scores, temperature)


@torch.no_grad()
def answer_logprob(model, tokenizer, prompts: list[list[int]], answers: list[list[int]], batch_size: int = 16) -> np.ndarray:
    """log p_LM(answer | prompt), summed over the answer's tokens, for each (prompt, answer) pair."""
    if len(prompts) != len(answers):
        raise TenfoldError("prompts and answers differ in number")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = []
    for i in range(0, len(prompts), batch_size):
        rows = [p + a for p, a in zip(prompts[i:i + batch_size], answers[i:i + batch_size])]
        width = max(map(len, rows))
        device = model.device
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), -1)
        for j, (p, a) in enumerate(zip(prompts[i:i + batch_size], answers[i:i + batch_size])):
            pos = torch.arange(len(p) - 1, len(p) + len(a) - 1, device=device)
            out.append(float(logp[j, pos, torch.tensor(a, device=device)].sum()))
    return np.asarray(out)


@torch.no_grad()
def replug_generate(model, tokenizer, groups: list[list[list[int]]], weights: list, max_new_tokens: int = 12,
                    batch_rows: int = 24) -> list[str]:
    """Greedy decoding from the weighted mixture of each group's prompts (one group per question).

    ``groups[i]`` holds question i's prompts (one per chunk; a single prompt is plain greedy decoding) and
    ``weights[i]`` their ensemble weights (summing to one).
    """
    results: list[str] = []
    start = 0
    while start < len(groups):  # pack whole groups into batches of about batch_rows prompts
        end, rows = start, 0
        while end < len(groups) and (rows == 0 or rows + len(groups[end]) <= batch_rows):
            rows += len(groups[end])
            end += 1
        results += _replug_batch(model, tokenizer, groups[start:end], weights[start:end], max_new_tokens)
        start = end
    return results


def _replug_batch(model, tokenizer, groups, weights, max_new_tokens: int) -> list[str]:
    from transformers import DynamicCache

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts, owner, w = [], [], []
    for g, (group, ws) in enumerate(zip(groups, weights)):
        ws = np.asarray(ws, dtype=np.float64)
        if not group or len(ws) != len(group) or not math.isclose(ws.sum(), 1.0, abs_tol=1e-4) or (ws < 0).any():
            raise TenfoldError("each question needs at least one prompt and weights that sum to one")
        prompts += group
        owner += [g] * len(group)
        w += ws.tolist()
    width = max(map(len, prompts))
    device = model.device  # every tensor of the mixture lives where the model's logits do
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    owner_t, w_t = torch.tensor(owner, device=device), torch.tensor(w, dtype=torch.float32, device=device)
    cache = DynamicCache()
    position = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
    answers = [[] for _ in groups]
    done = torch.zeros(len(groups), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        probs = torch.softmax(out.logits[:, -1].float(), -1) * w_t[:, None]
        mixture = torch.zeros(len(groups), probs.shape[-1], device=device).index_add_(0, owner_t, probs)
        choice = mixture.argmax(-1)
        for g in range(len(groups)):
            if not done[g]:
                if int(choice[g]) == eos:
                    done[g] = True
                else:
                    answers[g].append(int(choice[g]))
        if bool(done.all()):
            break
        nxt = choice[owner_t][:, None]
        mask = torch.cat([mask, torch.ones(len(prompts), 1, dtype=mask.dtype, device=device)], 1)
        position = position[:, -1:] + 1
        out = model(input_ids=nxt, attention_mask=mask, position_ids=position, cache=cache, use_cache=True)
    return [tokenizer.decode(a, skip_special_tokens=True).strip() for a in answers]
