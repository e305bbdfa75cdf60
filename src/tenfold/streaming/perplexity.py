"""Exact streaming perplexity, one token per step (StreamingLLM, Xiao et al. 2023, Sec. 4.1 / Fig. 3).

Methods, all with the same attention span ``num_sinks + window`` (the cache size) except dense:
- ``dense``: full KV cache, no eviction (grows with the text);
- ``window``: only the most recent ``num_sinks + window`` tokens (window attention, no sinks);
- ``recompute``: sliding window with re-computation: the last ``num_sinks + window`` tokens are
  re-encoded from scratch for every prediction (the quality reference, quadratic cost);
- ``sink``: ``num_sinks`` attention sinks + the ``window`` most recent tokens (StreamingLLM).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import psutil
import torch
from transformers import DynamicCache

from tenfold.errors import TenfoldError
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.nll import token_nll
from tenfold.streaming.sink_cache import SinkCache, enable_streaming

METHODS = ("dense", "window", "recompute", "sink")


@dataclass
class StreamResult:
    method: str
    nll: np.ndarray  # per predicted token (natural log)
    seconds: float
    peak_rss_mb: float
    sinks: int
    window: int
    positions: np.ndarray = field(default=None)  # which token index each nll predicts

    @property
    def tokens(self) -> int:
        return int(self.nll.size)

    @property
    def ppl(self) -> float:
        return float(math.exp(self.nll.mean())) if self.nll.size else float("nan")

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        return {"method": self.method, "tokens": self.tokens, "sinks": self.sinks, "window": self.window,
                "ppl": self.ppl, "tokens_per_s": self.tokens_per_s, "peak_rss_mb": self.peak_rss_mb}


class _Rss:
    def __init__(self):
        self.proc, self.peak = psutil.Process(), 0.0

    def sample(self) -> None:
        self.peak = max(self.peak, self.proc.memory_info().rss / 2**20)


@torch.no_grad()
def perplexity(model, token_ids, method: str = "sink", config: SinkConfig | None = None, progress=None, recompute_stride: int = 1, recompute_batch: int = 8,
               dense_chunk: int = 512, blocked: bool = False, block: int = 256) -> StreamResult:
    """Stream ``token_ids`` through ``model`` with ``method``; return per-token NLL, ppl, tokens/s and peak RSS.

    ``token_ids``: one stream (T,) or several independent streams of equal length (B, T), run
    as one batch. ``config``: the cache (:class:`~tenfold.streaming.SinkConfig`, default 4+1020); every method
    but dense attends to ``config.size`` tokens. ``progress(done, total)`` is called as tokens are predicted.
    ``recompute_stride`` > 1 scores every k-th token only for ``recompute`` (an unbiased sample;
    it costs a full window per token). ``dense`` is computed in exact causal chunks of
    ``dense_chunk`` tokens (the same numbers as one token per step, far faster).
    ``blocked=True`` computes ``window`` and ``sink`` ``block`` tokens per forward pass with
    :func:`~tenfold.streaming.blocked.blocked_nll`: the same numbers as one token per step (up to
    rounding), at prefill speed; tokens/s then measures evaluation, not decoding.
    """
    if method not in METHODS:
        raise TenfoldError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    from tenfold.devices import model_device

    ids = torch.as_tensor(token_ids, dtype=torch.long).to(model_device(model))  # inputs go to the model's device
    ids = ids[None] if ids.ndim == 1 else ids
    if ids.ndim != 2 or ids.shape[1] < 2:
        raise TenfoldError("need at least 2 tokens to measure perplexity")
    config = config if config is not None else SinkConfig()
    num_sinks, window = config.num_sinks, config.window
    if blocked and block < 1:
        raise TenfoldError(f"block must be >= 1 (got {block})")
    size, total = num_sinks + window, ids.shape[1] - 1
    rss, tick = _Rss(), progress or (lambda done, total: None)
    rss.sample()
    start = time.perf_counter()
    if method == "recompute":
        rows = [_recompute(model, row, size, max(1, recompute_stride), recompute_batch, rss, tick) for row in ids]
        nll, where = np.stack([r[0] for r in rows]), rows[0][1]
    elif method == "dense":
        nll, where = _dense(model, ids, dense_chunk, rss, tick), np.arange(1, total + 1)
    elif blocked:
        from tenfold.streaming.blocked import blocked_nll

        sinks, span = (0, size) if method == "window" else (num_sinks, window)
        nll = blocked_nll(model, ids, sinks, span, block=block, tick=tick).cpu().numpy()
        where = np.arange(1, total + 1)
    else:
        enable_streaming(model)
        cache = SinkCache(config=dataclasses.replace(config, num_sinks=0, window=size, prefill_chunk=None,
                                                     rebase_at=None) if method == "window" else config)
        out = torch.empty((ids.shape[0], total), dtype=torch.float64)
        for t in range(total):
            logits = model(input_ids=ids[:, t : t + 1], cache=cache, use_cache=True).logits
            out[:, t] = token_nll(logits[:, -1], ids[:, t + 1]).cpu()
            if t % 32 == 0:
                rss.sample()
                tick(t + 1, total)
        nll, where = out.numpy(), np.arange(1, total + 1)
    seconds = time.perf_counter() - start
    rss.sample()
    tick(total, total)
    if not np.isfinite(nll).all():
        raise TenfoldError(f"{method}: the model produced non-finite losses")
    return StreamResult(method, nll, seconds, rss.peak, num_sinks, window, where)


def _dense(model, ids, chunk, rss, tick):
    cache, out, total = DynamicCache(config=model.config), [], ids.shape[1] - 1
    for start in range(0, ids.shape[1], chunk):
        logits = model(input_ids=ids[:, start : start + chunk], cache=cache, use_cache=True).logits
        targets = ids[:, start + 1 : start + chunk + 1]
        logits = logits[:, : targets.shape[1]]
        out.append(token_nll(logits, targets).view(ids.shape[0], -1).double())
        rss.sample()
        tick(min(total, start + chunk), total)
    return torch.cat(out, dim=1).cpu().numpy()


def _recompute(model, ids, size, stride, batch, rss, tick):
    total = ids.numel() - 1
    head = min(size, ids.numel())
    # Predictions of tokens 1..head-1 have all their context inside the first window: one causal pass.
    logits = model(input_ids=ids[None, :head], use_cache=False).logits[0, :-1]
    nll = list(token_nll(logits, ids[1:head]).tolist())[:: stride]
    where = list(range(1, head))[:: stride]
    targets = list(range(head, ids.numel()))[::stride]
    for i in range(0, len(targets), batch):
        group = targets[i : i + batch]
        windows = torch.stack([ids[t - size : t] for t in group])
        out = model(input_ids=windows, use_cache=False, logits_to_keep=1).logits[:, -1]  # not (B, window, V)
        nll.extend(token_nll(out, ids[group]).tolist())
        where.extend(group)
        rss.sample()
        tick(min(total, group[-1]), total)
    return np.asarray(nll), np.asarray(where)
