"""StreamingLLM with the real bundled SmolLM2 and real Austen text."""
import json
import subprocess
import sys

import pytest
import torch

from tenfold.data import austen
from tenfold.streaming import SinkCache, SinkConfig, enable_streaming
from tenfold.streaming.perplexity import perplexity

pytestmark = pytest.mark.slow


def cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tenfold.cli", *args], input=stdin, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def emma_ids(lm):
    _, tok = lm
    return tok(austen("emma")[:30000], return_tensors="pt").input_ids[0]


def test_sink_beats_window_and_tracks_recompute(lm, emma_ids):
    model, _ = lm
    ids = emma_ids[:400]
    sink = perplexity(model, ids, "sink", SinkConfig(4, 60))
    window = perplexity(model, ids, "window", SinkConfig(4, 60))
    recompute = perplexity(model, ids, "recompute", SinkConfig(4, 60))
    assert window.ppl > 1.5 * sink.ppl
    assert abs(sink.ppl / recompute.ppl - 1) < 0.1
    assert sink.nll.shape == (1, 399) and sink.peak_rss_mb > 0


def test_generation_with_a_prompt_three_times_the_cache_is_fluent(lm, emma_ids):
    model, tok = lm
    enable_streaming(model)
    cache = SinkCache(4, 124)
    prompt = emma_ids[None, 1000:1000 + 3 * cache.size]
    with torch.no_grad():
        out = model.generate(prompt, attention_mask=torch.ones_like(prompt), cache=cache, max_new_tokens=40,
                             do_sample=False)
    new = out[0, prompt.shape[1]:]
    assert cache.fill() <= cache.size and cache.evicted > 2 * cache.size
    # Fluent = the continuation is likely text for the model reading it with full context, and not a loop.
    with torch.no_grad():
        logits = model(input_ids=out[:, -200:]).logits[0, -41:-1]
    ppl = torch.exp(torch.nn.functional.cross_entropy(logits, new)).item()
    assert ppl < 15, (ppl, tok.decode(new))
    assert len(set(new.tolist())) >= 15, tok.decode(new)


def test_stream_ppl_cli_json_shape():
    res = cli("stream-ppl", "--book", "emma", "--tokens", "120", "--method", "sink", "--sinks", "4", "--window", "28",
              "--dtype", "float16", "--json")
    assert res.returncode == 0, res.stderr
    row = json.loads(res.stdout)
    assert set(row) == {"method", "tokens", "sinks", "window", "ppl", "tokens_per_s", "peak_rss_mb"}
    assert row["method"] == "sink" and row["tokens"] == 119 and row["sinks"] == 4 and row["window"] == 28
    assert 1 < row["ppl"] < 1000


def test_piped_chat_survives_a_conversation_longer_than_the_window():
    turns = "Hello, who are you?\nTell me about the sea.\nAnd about mountains?\n/stats\n"
    res = cli("chat", "--sinks", "4", "--window", "48", "--max-new-tokens", "30", stdin=turns)
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["weights"] == "int4"  # issue 25: the default for the bundled model
    assert stats["evicted"] > 0 and stats["cache_fill"] <= stats["cache_size"] == 52
    assert stats["tokens_seen"] > 52 and stats["generated"] > 0
    assert stats["cache"] == "4+48" and stats["prefill_chunk"] == 24 and stats["rebases"] > 0  # defaults: 48 // 2, 104
    # The SinkConfig flags reach the cache: a far re-base limit never re-bases, and the prefill chunk is the one given.
    res = cli("chat", "--sinks", "4", "--window", "48", "--max-new-tokens", "30", "--rebase-at", "100000",
              "--prefill-chunk", "8", stdin=turns)
    assert res.returncode == 0, res.stderr
    tuned = json.loads(res.stdout.strip().splitlines()[-1])
    assert tuned["rebases"] == 0 and tuned["prefill_chunk"] == 8 and tuned["tokens_seen"] > 52


def test_chat_sampling_flags_reach_the_sampler():
    """--top-k / --min-p / --repetition-penalty pass through to transformers' processors: top-k 1 at a hot
    temperature is greedy; a repetition penalty (over the reply's own tokens) changes a greedy reply that repeats."""
    turn = "Count from 1 to 20, separated by commas.\n"

    def reply(*flags):
        res = cli("chat", "--window", "124", "--max-new-tokens", "20", *flags, stdin=turn)
        assert res.returncode == 0, res.stderr
        return res.stdout

    greedy = reply()
    assert reply("--temperature", "1.9", "--top-k", "1") == greedy
    assert reply("--temperature", "1.9", "--min-p", "1") == greedy
    assert reply("--repetition-penalty", "1.8") != greedy
    bad = cli("chat", "--min-p", "1.5", stdin=turn)
    assert bad.returncode == 2 and "--min-p: must be in [0, 1]" in bad.stderr


def test_a_turn_stopped_while_it_is_read_in_is_dropped_whole(lm):
    """Ctrl-C while a long pasted message is prefilled (35 s for 6k tokens on this CPU) stops between prefill chunks:
    the turn is dropped, the cache is back where it was, and the chat goes on as if it had never been sent."""
    from tenfold.streaming.chat import StreamingChat

    model, _ = lm
    tok = lm[1]
    chat, fresh = StreamingChat(model, tok, SinkConfig(4, 60), max_new_tokens=12), StreamingChat(model, tok, SinkConfig(4, 60), max_new_tokens=12)
    assert "".join(chat.say("Hello!")) == "".join(fresh.say("Hello!"))
    before = chat.stats()
    asked = []

    def stop_on_second_chunk():
        asked.append(1)
        return len(asked) >= 2

    long_turn = "Please summarise this. " + "The river ran past the old mill and on to the sea. " * 40
    assert list(chat.say(long_turn, should_stop=stop_on_second_chunk)) == [] and chat.turn_dropped
    assert len(asked) == 2 and chat.stats() == before  # one chunk was fed, then undone
    assert "".join(chat.say("Name a colour.")) == "".join(fresh.say("Name a colour."))
    assert not chat.turn_dropped


def test_a_reply_stopped_mid_way_leaves_the_chat_as_a_reply_that_ended_there(lm):
    """`say(..., should_stop=...)` (the CLI's Ctrl-C during a reply) ends the reply between tokens: the cache and the
    conversation then match a chat whose reply hit max_new_tokens at the same token, and the next turn is the same."""
    from tenfold.streaming.chat import StreamingChat

    model, tok = lm
    shown = []
    stopped = StreamingChat(model, tok, SinkConfig(4, 60), max_new_tokens=200)
    for piece in stopped.say("Tell me a long story about a dragon.", should_stop=lambda: len(shown) >= 6):
        shown.append(piece)
    short = StreamingChat(model, tok, SinkConfig(4, 60), max_new_tokens=stopped.generated)
    assert "".join(short.say("Tell me a long story about a dragon.")) == "".join(shown)
    assert stopped.generated < 200 and stopped.stats()["tokens_seen"] == short.stats()["tokens_seen"]
    assert stopped.messages == short.messages and stopped.pending == short.pending
    for chat in (stopped, short):
        chat.max_new_tokens = 12
    assert "".join(stopped.say("What was its name?")) == "".join(short.say("What was its name?"))
    assert stopped.stats()["tokens_seen"] == short.stats()["tokens_seen"]


def _chat_process():
    import subprocess as sp

    return sp.Popen([sys.executable, "-m", "tenfold", "chat", "--sinks", "4", "--window", "60", "--max-new-tokens",
                     "2000"], stdin=sp.PIPE, stdout=sp.PIPE, stderr=sp.PIPE, bufsize=0)


def _read_until(proc, buffer: list, done, timeout=300):
    """Read the process's stdout into ``buffer`` (bytes pieces) until ``done(text)``; the text read so far."""
    import os
    import select
    import time

    deadline = time.time() + timeout
    while not done(b"".join(buffer).decode(errors="replace")):
        assert time.time() < deadline, f"timed out; stdout so far: {b''.join(buffer)[-500:]!r}"
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, f"the chat ended early: {proc.stderr.read().decode()[-2000:]}"
            buffer.append(chunk)
    return b"".join(buffer).decode(errors="replace")


def test_ctrl_c_in_chat_stops_the_reply_not_the_chat():
    """SIGINT during a 2000-token reply stops that reply (newline, '(reply stopped)' on stderr); the chat answers the
    next line and ends with 0 at end of input. SIGINT at the prompt ends the chat with 130."""
    import signal

    proc = _chat_process()
    try:
        out: list = []
        proc.stdin.write(b"Tell me a very long story about a dragon who loves the sea.\n")
        _read_until(proc, out, lambda text: len(text) >= 40)  # the reply is under way
        proc.send_signal(signal.SIGINT)
        proc.stdin.write(b"/stats\n")
        text = _read_until(proc, out, lambda text: "\n{" in text and text.rstrip().endswith("}"))
        stats = json.loads(text.rstrip().splitlines()[-1])
        assert 0 < stats["generated"] < 2000 and proc.poll() is None
        rest, err = proc.communicate(b"/reset\nHello!\n", timeout=600)  # then end of input
        assert proc.returncode == 0, err.decode()[-2000:]
        assert "(conversation reset)" in rest.decode() and "(reply stopped)" in err.decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    proc = _chat_process()
    try:
        out = []
        proc.stdin.write(b"/stats\n")
        _read_until(proc, out, lambda text: text.rstrip().endswith("}"))  # loaded and back at the prompt
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130 and err.decode().strip().splitlines()[-1] == "tenfold: interrupted"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_stream_ppl_plot_is_written_and_named_in_the_json(tmp_path):
    fig = tmp_path / "figs" / "ppl.png"
    res = cli("stream-ppl", "--book", "emma", "--tokens", "40", "--window", "28", "--json", "--plot", str(fig))
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["plot"] == str(fig.resolve()) and fig.stat().st_size > 1000
