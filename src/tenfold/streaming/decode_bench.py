"""Decode-speed measurements for the sink cache, side by side with the engines a user would pick instead.

Used by the ``streaming-decode`` experiment (issue 25). Every function decodes one token per step after
a prompt that fills the cache, so each step evicts (StreamingLLM Sec. 3.2), and returns wall-clock and
CPU seconds per token: on a loaded machine the CPU-time ratios are the ones to read.

- :func:`time_sink_decode`: tenfold's :class:`~tenfold.streaming.SinkCache`, ring (default) or re-rotating.
- :func:`time_dynamic_decode`: transformers' default ``DynamicCache`` at the same context length (no eviction):
  what ``model.generate`` does per step.
- :func:`time_llama_cpp_decode`: llama.cpp (llama-cpp-python, when importable) on the bundled GGUF, evicting
  StreamingLLM-style in 64-token blocks after the first 4 tokens (``kv_cache_seq_rm`` + ``kv_cache_seq_shift``).
- :func:`step_profile`: where one sink-cache decode step goes: linear layers, attention, cache bookkeeping,
  and everything else (norms, RoPE, activations, framework overhead), in milliseconds.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

import torch

from tenfold.streaming.sink_cache import SinkCache, enable_streaming, prefill


def _clock():
    return time.perf_counter(), time.process_time()


def _per_token(start, steps: int) -> dict:
    wall, cpu = _clock()
    return {"wall_s": (wall - start[0]) / steps, "cpu_s": (cpu - start[1]) / steps}


@torch.no_grad()
def prefilled_cache(model, ids: torch.Tensor, num_sinks: int, window: int) -> SinkCache:
    """A sink cache holding the first ``num_sinks + window`` tokens of ``ids`` (T,): full, nothing evicted yet."""
    enable_streaming(model)
    cache = SinkCache(num_sinks, window)
    prefill(model, cache, ids[None, : num_sinks + window])
    return cache


@torch.no_grad()
def time_sink_decode(model, full: SinkCache, ids: torch.Tensor, steps: int, rerotate: bool = False) -> dict:
    """Seconds per decoded token (``wall_s``, ``cpu_s``) through a copy of ``full`` (see :func:`prefilled_cache`).

    ``ids``: (T,) the tokens ``full`` was filled from, T >= its size + steps + 1; every step evicts one token.
    ``rerotate``: the original re-rotating eviction instead of the ring.
    """
    cache = full.copy()
    cache.rerotate = rerotate  # nothing was evicted yet: both modes start from the same state
    size = full.size
    model(input_ids=ids[None, size : size + 1], cache=cache)  # first eviction (and sink copy) outside the timing
    start = _clock()
    for t in range(steps):
        model(input_ids=ids[None, size + 1 + t : size + 2 + t], cache=cache)
    return _per_token(start, steps)


@torch.no_grad()
def time_dynamic_decode(model, ids: torch.Tensor, context: int, steps: int) -> dict:
    """Seconds per decoded token with transformers' ``DynamicCache`` after a ``context``-token prompt."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    model(input_ids=ids[None, :context], cache=cache, use_cache=True)
    start = _clock()
    for t in range(steps):
        model(input_ids=ids[None, context + t : context + t + 1], cache=cache, use_cache=True)
    return _per_token(start, steps)


def llama_cpp_available() -> bool:
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        return False
    return True


def time_llama_cpp_decode(gguf: str, ids: list[int], num_sinks: int, window: int, steps: int, threads: int,
                          block: int = 64) -> dict:
    """Seconds per decoded token in llama.cpp with sink-style block eviction; ``ids`` as for the sink cache.

    Raises ImportError when llama-cpp-python is not installed (it is a peer to measure, not a dependency).
    """
    import llama_cpp

    size = num_sinks + window
    llm = llama_cpp.Llama(model_path=gguf, n_ctx=size + block, n_batch=size, n_threads=threads,
                          n_threads_batch=threads, verbose=False)
    ctx = llm._ctx
    llm.eval(ids[:size])
    start = None
    for t in range(steps + 1):
        if llm.n_tokens >= size + block - 1:  # evict the oldest `block` recent tokens, shift the rest left
            ctx.kv_cache_seq_rm(0, num_sinks, num_sinks + block)
            ctx.kv_cache_seq_shift(0, num_sinks + block, llm.n_tokens, -block)
            llm.n_tokens -= block
        llm.eval([ids[size + t]])
        if t == 0:
            start = _clock()  # the first step outside the timing, as for the others
    out = _per_token(start, steps)
    llm.close()
    return out


class _TimedSinkCache(SinkCache):
    """A sink cache that adds up the seconds spent in its own bookkeeping (eviction, sinks, writes)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.step_s = self.update_s = 0.0  # eviction (before the layers run); writes (inside attention)

    def begin_step(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return super().begin_step(*args, **kwargs)
        finally:
            self.step_s += time.perf_counter() - t

    def update(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return super().update(*args, **kwargs)
        finally:
            self.update_s += time.perf_counter() - t


@contextmanager
def _module_timer(modules):
    """Accumulate wall seconds spent inside ``modules`` (outermost calls only) via forward hooks."""
    total = {"s": 0.0}
    depth = {"n": 0, "t": 0.0}

    def pre(module, args):
        if depth["n"] == 0:
            depth["t"] = time.perf_counter()
        depth["n"] += 1

    def post(module, args, out):
        depth["n"] -= 1
        if depth["n"] == 0:
            total["s"] += time.perf_counter() - depth["t"]

    handles = [h for m in modules for h in (m.register_forward_pre_hook(pre), m.register_forward_hook(post))]
    try:
        yield total
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def step_profile(model, ids: torch.Tensor, num_sinks: int, window: int, steps: int, rerotate: bool = False) -> dict:
    """Milliseconds per decode step: ``linear``, ``attention`` (scores, softmax, values, RoPE, head reshapes),
    ``cache`` (eviction and writes), ``other`` (norms, activations, embedding, glue) and ``total``."""
    enable_streaming(model)
    size = num_sinks + window
    cache = _TimedSinkCache(num_sinks, window, rerotate=rerotate)
    prefill(model, cache, ids[None, :size])
    model(input_ids=ids[None, size : size + 1], cache=cache)
    from tenfold.models.quantize import BFloat16Linear, Int4Linear

    kinds = (torch.nn.Linear, Int4Linear, BFloat16Linear)
    linears = [m for m in model.modules() if isinstance(m, kinds)]
    attentions = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    projections = [m for a in attentions for m in a.modules() if isinstance(m, kinds)]
    cache.step_s = cache.update_s = 0.0
    with _module_timer(linears) as lin, _module_timer(attentions) as att, _module_timer(projections) as proj:
        t0 = time.perf_counter()
        for t in range(steps):
            model(input_ids=ids[None, size + 1 + t : size + 2 + t], cache=cache)
        total = time.perf_counter() - t0
    # q/k/v/o projections and the cache update run inside self_attn: count them once, as linear / cache
    attention = max(0.0, att["s"] - proj["s"] - cache.update_s)
    in_cache = cache.step_s + cache.update_s
    ms = lambda s: 1000 * s / steps  # noqa: E731
    return {k: round(v, 2) for k, v in {"linear": ms(lin["s"]), "attention": ms(attention), "cache": ms(in_cache),
            "other": ms(max(0.0, total - lin["s"] - attention - in_cache)), "total": ms(total)}.items()}
