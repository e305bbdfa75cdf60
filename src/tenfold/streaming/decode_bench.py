"""Decode-speed measurements for the sink cache, side by side with the engines a user would pick instead.

Used by the ``streaming-decode`` experiment (issue 25). Every function decodes one token per step after
a prompt that fills the cache, so each step evicts (StreamingLLM Sec. 3.2), and returns wall-clock and
CPU seconds per token: on a loaded machine the CPU-time ratios are the ones to read.

- :func:`time_sink_decode`: tenfold's :class:`~tenfold.streaming.SinkCache`, ring (default) or re-rotating.
- :func:`time_compiled_decode`: the same through the compiled decode step (:mod:`tenfold.streaming.compiled`);
  :func:`compile_startup_s`: what a fresh process pays to compile it, cold and warm.
- :func:`time_dynamic_decode`: transformers' default ``DynamicCache`` at the same context length (no eviction):
  what ``model.generate`` does per step.
- :func:`time_llama_cpp_decode`: llama.cpp (llama-cpp-python, when importable) on the bundled GGUF, evicting
  StreamingLLM-style in 64-token blocks after the first 4 tokens (``kv_cache_seq_rm`` + ``kv_cache_seq_shift``).
- :func:`step_profile`: where one sink-cache decode step goes: linear layers, attention, cache bookkeeping,
  and everything else (norms, RoPE, activations, framework overhead), in milliseconds.
- :func:`chat_peak_rss_mb`, :func:`import_rss_mb`, :func:`llama_cpp_peak_rss_mb`: peak resident memory (MB) of
  ``tenfold chat`` answering a prompt that fills the cache, of the imports alone, and of llama.cpp doing the same
  (each in its own process: ``getrusage(RUSAGE_CHILDREN)`` of a one-child wrapper).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
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
def time_compiled_decode(decoder, full: SinkCache, ids: torch.Tensor, steps: int) -> dict:
    """As :func:`time_sink_decode`, through a warmed-up :class:`~tenfold.streaming.compiled.CompiledDecoder`."""
    cache = full.copy()
    size = full.size
    decoder.step(cache, ids[size : size + 1])
    start = _clock()
    for t in range(steps):
        decoder.step(cache, ids[size + 1 + t : size + 2 + t])
    return _per_token(start, steps)


_STARTUP = """
import json, sys, time
t0 = time.perf_counter()
from tenfold.models.decode import load_for_decoding
from tenfold.streaming import SinkConfig
from tenfold.streaming.compiled import CompiledDecoder
model, _ = load_for_decoding(None, sys.argv[1], "cpu")
loaded = time.perf_counter()
decoder = CompiledDecoder(model, SinkConfig(int(sys.argv[2]), int(sys.argv[3])))
print(json.dumps({"load_s": loaded - t0, "compile_s": decoder.warm_up()}))
"""


def compile_startup_s(dtype: str, num_sinks: int, window: int, home: str) -> dict:
    """Seconds a fresh process takes to load the bundled model (``load_s``) and compile its decode step
    (``compile_s``) with ``$TENFOLD_HOME`` = ``home``: cold the first time in a new ``home``, warm after (the
    compiled artefacts kept there). The model's converted weights are linked in from the current home."""
    from tenfold import home as current_home

    models = os.path.join(home, "models")
    if not os.path.exists(models):
        os.makedirs(home, exist_ok=True)
        os.symlink(os.path.join(current_home(), "models"), models)
    env = {**os.environ, "TENFOLD_HOME": home}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    done = subprocess.run([sys.executable, "-c", _STARTUP, dtype, str(num_sinks), str(window)], capture_output=True,
                          text=True, env=env, timeout=1800)
    if done.returncode:
        raise RuntimeError(f"compiling failed: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


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
    """Milliseconds per decode step: ``linear`` (of which ``lm_head``: the output projection), ``attention`` (scores,
    softmax, values, RoPE, head reshapes), ``cache`` (eviction and writes), ``other`` (norms, activations,
    embedding, glue) and ``total``."""
    enable_streaming(model)
    size = num_sinks + window
    cache = _TimedSinkCache(num_sinks, window, rerotate=rerotate)
    prefill(model, cache, ids[None, :size])
    model(input_ids=ids[None, size : size + 1], cache=cache)
    from tenfold.models.quantize import HalfLinear, Int4Linear

    kinds = (torch.nn.Linear, Int4Linear, HalfLinear)
    linears = [m for m in model.modules() if isinstance(m, kinds)]
    attentions = [m for name, m in model.named_modules() if name.endswith("self_attn")]
    projections = [m for a in attentions for m in a.modules() if isinstance(m, kinds)]
    cache.step_s = cache.update_s = 0.0
    head = [model.get_output_embeddings()]
    with _module_timer(linears) as lin, _module_timer(attentions) as att, _module_timer(projections) as proj, \
            _module_timer(head) as out:
        t0 = time.perf_counter()
        for t in range(steps):
            model(input_ids=ids[None, size + 1 + t : size + 2 + t], cache=cache)
        total = time.perf_counter() - t0
    # q/k/v/o projections and the cache update run inside self_attn: count them once, as linear / cache
    attention = max(0.0, att["s"] - proj["s"] - cache.update_s)
    in_cache = cache.step_s + cache.update_s
    ms = lambda s: 1000 * s / steps  # noqa: E731
    return {k: round(v, 2) for k, v in {"linear": ms(lin["s"]), "lm_head": ms(out["s"]), "attention": ms(attention),
                                        "cache": ms(in_cache),
            "other": ms(max(0.0, total - lin["s"] - attention - in_cache)), "total": ms(total)}.items()}


_PEAK_WRAPPER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdin=sys.stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
if done.returncode:
    sys.exit(done.stderr[-2000:] or f"exit {done.returncode}")
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


def peak_rss_mb(argv: list[str], stdin: str = "", env: dict | None = None, timeout: float = 900) -> float:
    """Peak resident set (MB) of the process ``argv`` run to its end. Raises RuntimeError when it fails."""
    done = subprocess.run([sys.executable, "-c", _PEAK_WRAPPER, *argv], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=env)
    if done.returncode:
        raise RuntimeError(f"{argv[:4]} failed: {done.stderr.strip()[-500:]}")
    return round(int(done.stdout.split()[-1]) / 1024, 1)  # Linux reports KB


def chat_peak_rss_mb(prompt: str, num_sinks: int, window: int, dtype: str = "auto", max_new_tokens: int = 16) -> float:
    """Peak RSS (MB) of ``tenfold chat --dtype DTYPE`` answering ``prompt`` (make it longer than the cache so
    the cache is full and evicting) with ``max_new_tokens`` greedy tokens, then quitting."""
    argv = [sys.executable, "-m", "tenfold", "chat", "--dtype", dtype, "--sinks", str(num_sinks), "--window",
            str(window), "--max-new-tokens", str(max_new_tokens)]
    return peak_rss_mb(argv, stdin=prompt.replace("\n", " ") + "\n/quit\n")


def import_rss_mb() -> float:
    """Peak RSS (MB) of importing what ``tenfold chat`` needs before it loads a model (torch, transformers'
    modelling code, tenfold's chat): the floor under any chat's memory."""
    code = ("import tenfold.streaming.chat, tenfold.models.lm, tenfold.models.int4_load; "
            "from transformers import AutoModelForCausalLM, AutoTokenizer; "
            "from transformers.models.llama import modeling_llama")
    return peak_rss_mb([sys.executable, "-c", code])


_LLAMA_CPP_CHAT = """
import json, sys
import llama_cpp
a = json.load(open(sys.argv[1]))
size, block = a["sinks"] + a["window"], 64
llm = llama_cpp.Llama(model_path=a["gguf"], n_ctx=size + block, n_batch=size, n_threads=a["threads"],
                      n_threads_batch=a["threads"], verbose=False)
ids = a["ids"]
llm.eval(ids[:size])
for t in range(a["steps"]):
    if llm.n_tokens >= size + block - 1:
        llm._ctx.kv_cache_seq_rm(0, a["sinks"], a["sinks"] + block)
        llm._ctx.kv_cache_seq_shift(0, a["sinks"] + block, llm.n_tokens, -block)
        llm.n_tokens -= block
    llm.eval([ids[size + t]])
llm.close()
"""


def llama_cpp_peak_rss_mb(gguf: str, ids: list[int], num_sinks: int, window: int, steps: int = 16,
                          threads: int = 1) -> float:
    """Peak RSS (MB) of llama.cpp (llama-cpp-python, in a process that imports nothing else) filling a
    ``num_sinks + window`` cache from ``ids`` and decoding ``steps`` tokens with sink-style eviction.
    ``ids`` needs ``num_sinks + window + steps`` tokens. Raises RuntimeError when it cannot run."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump({"gguf": gguf, "ids": ids, "sinks": num_sinks, "window": window, "steps": steps,
                   "threads": threads}, f)
    try:
        return peak_rss_mb([sys.executable, "-c", _LLAMA_CPP_CHAT, f.name], env=env)
    finally:
        os.unlink(f.name)
