"""``serve-load``: bounded loopback load on a real ``tenfold serve`` (StreamingLLM's multi-round streaming setting).

Two measurements against a server started in a subprocess on a free port:
1. short chat completions at concurrency 1 / 4 / 16: requests/s and p50/p95 latency;
2. a long conversation (Austen passages to summarise, one per turn): time per turn with a session
   (each turn feeds only its new tokens into the session's sink cache) vs. stateless requests that
   re-send and re-prefill the whole history, at a few checkpoint turns.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from tenfold.report import experiment
from tenfold.serve.launch import ServerProcess

MODEL = "smollm2-135m-instruct"


def _chat(client, base: str, messages: list[dict], max_tokens: int, session: str | None = None) -> tuple[float, dict]:
    headers = {"X-Session-Id": session} if session else {}
    start = time.perf_counter()
    r = client.post(base + "/v1/chat/completions", headers=headers, timeout=600,
                    json={"model": MODEL, "messages": messages, "max_tokens": max_tokens, "temperature": 0})
    r.raise_for_status()
    return time.perf_counter() - start, r.json()


def _load(base: str, concurrency: int, requests: int, max_tokens: int) -> dict:
    import httpx

    def one(i):
        with httpx.Client() as c:
            return _chat(c, base, [{"role": "user", "content": f"Give me one word that rhymes with number {i}."}],
                         max_tokens)[0]

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        lat = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return {"requests": requests, "requests_per_s": requests / wall, "p50_s": float(np.percentile(lat, 50)),
            "p95_s": float(np.percentile(lat, 95))}


def _passages(n: int, words: int) -> list[str]:
    from tenfold.data import austen

    text = austen("prideprejudice").split()
    return [" ".join(text[2000 + i * words : 2000 + (i + 1) * words]) for i in range(n)]


@experiment(
    "serve-load", paper="streamingllm",
    claim="Served over an OpenAI-compatible API, a session's sink cache makes each turn of a long conversation cost "
          "only its new tokens, while stateless serving re-prefills the whole history every turn (multi-round "
          "streaming, Sec. 4.4); the conversation never hits a context limit.",
    paper_numbers={"per-token speedup vs sliding window with re-computation": "up to 22.2x",
                   "target here": ">= 5x faster per turn at turn 30 with sessions"})
def serve_load(run):
    import httpx

    window = run.pick(252, 1020, 1020)
    levels = run.pick([1, 4], [1, 4, 16], [1, 4, 16])
    per_level = run.pick(lambda c: 2 * c, lambda c: max(6, 2 * c), lambda c: max(16, 4 * c))
    turns = run.pick(6, 30, 30)
    checkpoints = sorted({1, turns // 3, 2 * turns // 3, turns})
    reply_tokens = run.pick(8, 16, 32)
    run.settings.update(model=MODEL, dtype="float32", cache=f"4+{window}", concurrency=levels, turns=turns,
                        reply_tokens=reply_tokens, passage_words=70, stateless_checkpoints=checkpoints,
                        transport="HTTP on loopback, server in a subprocess")
    ours: dict = {}
    with ServerProcess(["--window", str(window)]) as server, httpx.Client() as client:
        _chat(client, server.base, [{"role": "user", "content": "Hello"}], 2)  # warm-up
        load = {}
        for c in levels:
            run.progress(f"load, concurrency {c}")
            load[str(c)] = _load(server.base, c, per_level(c), 8)
        ours["load"] = load
        run.progress(f"{turns}-turn conversation with a session")
        history, session_s, stateless_s, prompt_tokens, cached = [], {}, {}, {}, {}
        snapshots = {}
        for turn, passage in enumerate(_passages(turns, 70), start=1):
            history.append({"role": "user", "content": f"Summarise this passage in one sentence:\n{passage}"})
            if turn in checkpoints:
                snapshots[turn] = list(history)
            took, out = _chat(client, server.base, history, reply_tokens, session="serve-load")
            session_s[turn] = took
            prompt_tokens[turn] = out["usage"]["prompt_tokens"]
            cached[turn] = out["usage"]["prompt_tokens_details"]["cached_tokens"]
            history.append({"role": "assistant", "content": out["choices"][0]["message"]["content"]})
        for turn in checkpoints:
            run.progress(f"stateless re-prefill at turn {turn}")
            stateless_s[turn] = _chat(client, server.base, snapshots[turn], reply_tokens)[0]
        health = client.get(server.base + "/health").json()
    ratio = stateless_s[turns] / session_s[turns]
    ours.update({"session_s_per_turn": {str(k): v for k, v in session_s.items()},
                 "stateless_s_per_turn": {str(k): v for k, v in stateless_s.items()},
                 "prompt_tokens_at_turn": {str(k): v for k, v in prompt_tokens.items()},
                 "cached_tokens_at_turn": {str(k): v for k, v in cached.items()},
                 "history_vs_window_at_last_turn": prompt_tokens[turns] / (4 + window),
                 "stateless_vs_session_at_last_turn": ratio,
                 "server": {k: health[k] for k in ("completed", "cancelled", "failed", "session_hits", "session_misses",
                                                   "prompt_tokens_fed", "prompt_tokens_reused")}})
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.5))
    a.plot(list(session_s), list(session_s.values()), "o-", ms=3, label="session (sink cache reused)")
    a.plot(list(stateless_s), list(stateless_s.values()), "s--", label="stateless (re-prefill history)")
    a.set_xlabel("turn")
    a.set_ylabel("seconds per turn")
    a.set_title(f"{turns}-turn conversation, cache 4+{window}")
    a.legend()
    xs = [int(c) for c in load]
    b.plot(xs, [load[str(c)]["p50_s"] for c in xs], "o-", label="p50 latency")
    b.plot(xs, [load[str(c)]["p95_s"] for c in xs], "o--", label="p95 latency")
    b.set_xscale("log", base=2)
    b.set_xlabel("concurrent requests")
    b.set_ylabel("seconds")
    b2 = b.twinx()
    b2.bar(xs, [load[str(c)]["requests_per_s"] for c in xs], alpha=0.25, width=[0.3 * c for c in xs], color="gray")
    b2.set_ylabel("requests/s (bars)")
    b.legend(loc="upper left")
    fig.tight_layout()
    run.save_plot(fig, "serve")
    target = 5 if turns >= 30 else 2
    verdict = "reproduced" if ratio >= target else ("partly" if ratio >= 1.5 else "not reproduced")
    why = (f"turn {turns} ({prompt_tokens[turns]} prompt tokens, {ours['history_vs_window_at_last_turn']:.1f}x the "
           f"cache): {session_s[turns]:.2f} s with a session vs {stateless_s[turns]:.2f} s stateless ({ratio:.1f}x, "
           f"target >= {target}x); {load[str(levels[-1])]['requests_per_s']:.2f} req/s at concurrency {levels[-1]}")
    return {"ours": ours, "verdict": verdict, "why": why}
