"""StreamingMemory: what the sink cache evicts goes into a retrieval index and comes back when asked."""
import subprocess
import sys

import numpy as np
import pytest

from tenfold.errors import TenfoldError
from tenfold.streaming.config import SinkConfig

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def embedder():
    from tenfold.retrieval.retriever import Embedder

    return Embedder()


@pytest.fixture(scope="module")
def register():
    from tenfold.retrieval.streameval import build_stream

    return build_stream(30, 3, [1, 2, 4, 8, 16, 24], seed=1)


def _memory(lm, embedder, sinks=4, window=60, **kw):
    from tenfold.retrieval.memory import StreamingMemory
    from tenfold.streaming.sink_cache import SinkCache

    return StreamingMemory(*lm, SinkCache(sinks, window), embedder=embedder, **kw)


def test_memory_recalls_a_fact_that_was_evicted(lm, embedder, register):
    from tenfold.retrieval.streameval import PRIMER

    lines, _ = register
    mem = _memory(lm, embedder, margin=0)
    mem.feed(PRIMER)  # its first 4 tokens are the attention sinks: never evicted, never archived
    for line in lines[:12]:
        mem.feed(line)
    assert mem.cache.evicted > 100 and mem.cache.fill() == mem.cache.size
    texts = mem.retriever.index.texts
    assert texts[0].startswith("towns and their residents.")  # the primer after the sinks
    # Every archived register chunk is one whole line (lines are archived whole, never cut at a token).
    register_chunks = [t for t in texts if t.startswith("Register line") and "line 0:" not in t]
    assert len(register_chunks) >= 5 and all(t + "\n" in lines for t in register_chunks)
    first = lines[0].strip()
    assert first in mem.retriever.index.texts  # long gone from a 4+60 cache
    town = first.split(": ", 1)[1].split(" has ")[0]
    hits = mem.recall(f"How many residents does {town} have?", k=1)
    assert hits and hits[0].text == first
    # Nothing still wholly in the cache is in the memory: the newest line is not.
    assert lines[11].strip() not in mem.retriever.index.texts
    assert mem.stats()["memory_tokens_archived"] == mem.cache.evicted


def test_recalled_and_skipped_text_is_never_archived(lm, embedder, register):
    from tenfold.retrieval.streameval import PRIMER

    lines, _ = register
    mem = _memory(lm, embedder)
    mem.feed(PRIMER)
    for line in lines[:8]:
        mem.feed(line)
    mem.feed("Question: this line is the caller's own and stays out of memory.\n", skip=True)
    town = lines[0].split(": ", 1)[1].split(" has ")[0]
    fed = mem.feed_recall(f"{town} residents", header="Recalled:\n")
    assert fed and fed[0].text == lines[0].strip()
    # Recalled and still cached: not offered again.
    assert all(h.index != fed[0].index for h in mem.recall(f"{town} residents"))
    for line in lines[8:20]:
        mem.feed(line)
    texts = mem.retriever.index.texts
    assert texts.count(lines[0].strip()) == 1  # the recalled copy was evicted again but not archived twice
    assert not any("caller's own" in t or t.startswith("Recalled") for t in texts)
    # Once the recalled copy has left the cache, the chunk may be recalled again.
    assert any(h.index == fed[0].index for h in mem.recall(f"{town} residents"))


def test_window_attention_archives_from_the_first_token(lm, embedder):
    mem = _memory(lm, embedder, sinks=0, window=40, margin=0)
    text = "".join(f"Note {i}: the {w} lamp is lit at dusk.\n" for i, w in enumerate(["red", "blue", "green",
                                                                                          "amber", "white", "grey"]))
    mem.feed(text)
    assert mem.retriever.index.texts[0] == "Note 0: the red lamp is lit at dusk."
    mem.reset()
    assert len(mem) == 0 and mem.cache.tokens_seen.numel() == 0


@pytest.mark.parametrize("kw, message", [({"k": 0}, "k must be"), ({"min_score": 2.0}, "min_score"),
                                         ({"margin": 61}, "margin"), ({"chunk_words": 0}, "chunk_words")])
def test_bad_memory_settings(lm, embedder, kw, message):
    with pytest.raises(TenfoldError, match=message):
        _memory(lm, embedder, **kw)


def test_streameval_with_memory_answers_evicted_questions(lm):
    from tenfold.retrieval.streameval import build_stream, run_stream

    lines, probes = build_stream(36, 3, [2, 12, 16], seed=2)
    plain = run_stream(*lm, lines, probes, 4, 124)
    with_memory = run_stream(*lm, lines, probes, 4, 124, memory={"k": 2})

    def evicted_accuracy(rows):
        gone = [r["correct"] for r in rows if r["evicted"]]
        assert len(gone) >= 3
        return float(np.mean(gone))

    assert all(r["recalled"] for r in with_memory if r["evicted"])
    assert evicted_accuracy(with_memory) >= 0.6
    assert evicted_accuracy(with_memory) >= evicted_accuracy(plain) + 0.4


def test_chat_with_memory_recalls_an_evicted_turn(lm):
    from tenfold.streaming.chat import StreamingChat

    chat = StreamingChat(*lm, SinkConfig(4, 124), max_new_tokens=24, memory=True)
    "".join(chat.say("My name is Ferdinand and my favourite colour is teal."))
    for turn in ["What is the capital of France?", "Name three fruits.", "What is two plus two?",
                 "Describe the sea in one sentence."]:
        "".join(chat.say(turn))
    assert chat.cache.evicted > 0 and any("Ferdinand" in t for t in chat.memory.retriever.index.texts)
    reply = "".join(chat.say("What is my favourite colour?"))
    assert isinstance(reply, str) and any("teal" in t for t in chat.last_recalled)
    stats = chat.stats()
    assert stats["memory_recalls"] >= 1 and stats["memory_chunks"] == len(chat.memory)


def test_chat_cli_rejects_bad_memory_settings():
    out = subprocess.run([sys.executable, "-m", "tenfold", "chat", "--memory", "--memory-k", "0"],
                         input="hello\n", capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "--memory-k must be >= 1" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
