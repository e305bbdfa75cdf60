"""Engine and session store logic, on a tiny random Llama with the bundled tokenizer (fast, no HTTP)."""
import threading
import time

import pytest
import torch

from tenfold.streaming.config import SinkConfig
from transformers import LlamaConfig, LlamaForCausalLM

from tenfold.serve.engine import Engine, GenParams, Job
from tenfold.serve.sessions import SessionStore, cache_bytes
from tenfold.streaming import SinkCache


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tenfold.models.lm import cached_dir, convert_bundled, is_cached

    if not is_cached():
        convert_bundled()
    return AutoTokenizer.from_pretrained(cached_dir())


@pytest.fixture(scope="module")
def tiny(tok):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(cfg).eval()


def _ids(tok, text):
    return tok(text, add_special_tokens=False).input_ids


def _run(engine, job):
    return engine.run(job)


def _text(job_events):
    return "".join(e[1] for e in job_events)


def test_session_prefix_is_reused_and_a_different_history_restarts(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 30))
    first = _ids(tok, "hello there, how are you today?")
    job = _run(eng, Job(first, GenParams(max_tokens=4), session_id="s"))
    session = eng.sessions._items["s"]
    assert session.consumed[: len(first)] == first and job.reused == 0
    follow = session.consumed + _ids(tok, " and tomorrow?")
    job2 = _run(eng, Job(follow, GenParams(max_tokens=3), session_id="s"))
    assert job2.reused == len(follow) - len(_ids(tok, " and tomorrow?")) and eng.stats["session_hits"] == 1
    job3 = _run(eng, Job(_ids(tok, "something else entirely, much longer than before"), GenParams(max_tokens=2), session_id="s"))
    assert job3.reused == 0 and eng.stats["session_misses"] == 1


def test_session_continuation_matches_fresh_prefill_when_nothing_is_evicted(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 200))
    events = []
    prompt = _ids(tok, "one two three four")
    _run(eng, Job(prompt, GenParams(max_tokens=5), session_id="a"))
    history = eng.sessions._items["a"].consumed + _ids(tok, " five six")
    _run(eng, Job(history, GenParams(max_tokens=6), session_id="a", emit=lambda *e: events.append(e)))
    fresh = []
    _run(eng, Job(history, GenParams(max_tokens=6), emit=lambda *e: fresh.append(e)))
    assert _text(events) == _text(fresh)


def test_a_parked_session_holds_only_its_tokens_and_continues_identically(tiny, tok):
    """issue 25: an idle session is kept compactly. Its cache grew in prefill-chunk steps (room for 64 columns
    after a 40-token turn); parked, it holds its filled columns only, and the next turn equals a fresh prefill."""
    eng = Engine(tiny, tok, SinkConfig(2, 200, prefill_chunk=32))
    prompt = _ids(tok, "one two three four five six seven eight nine ten " * 3)
    _run(eng, Job(prompt, GenParams(max_tokens=5), session_id="a"))
    session = eng.sessions._items["a"]
    filled = session.cache.fill()
    per_token = 2 * 2 * 2 * (32 // 4) * 4  # layers x (k, v) x kv heads x head dim x float32
    assert filled == len(session.consumed) and cache_bytes(session.cache) == filled * per_token
    assert all(layer.capacity == layer.n for layer in session.cache.layers)
    events, fresh = [], []
    history = session.consumed + _ids(tok, " eleven twelve")
    _run(eng, Job(history, GenParams(max_tokens=8), session_id="a", emit=lambda *e: events.append(e)))
    _run(eng, Job(history, GenParams(max_tokens=8), emit=lambda *e: fresh.append(e)))
    assert _text(events) == _text(fresh) and eng.stats["session_hits"] == 1


def test_prompt_longer_than_the_cache_and_n_choices(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 16))
    events = []
    job = _run(eng, Job(_ids(tok, "word " * 100), GenParams(max_tokens=4, temperature=1.0, n=3, seed=1),
                        emit=lambda *e: events.append(e)))
    assert len(job.choices) == 3 and all(c.finish_reason for c in job.choices) and not eng.sessions._items
    assert {e[0] for e in events if e[2]} == {0, 1, 2}
    assert all(c.cache.fill() <= 18 for c in job.choices)


def test_stop_string_is_cut_and_never_emitted(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 64))
    events = []
    free = _run(eng, Job(_ids(tok, "a b c"), GenParams(max_tokens=12), emit=lambda *e: events.append(e)))
    text = free.choices[0].text
    assert len(text) > 4
    stop = text[3:5]
    events2 = []
    job = _run(eng, Job(_ids(tok, "a b c"), GenParams(max_tokens=12, stop=[stop]), emit=lambda *e: events2.append(e)))
    assert _text(events2) == text[: text.find(stop)] and job.choices[0].finish_reason == "stop"


def test_round_robin_interleaves_jobs_and_cancel_frees_the_slot(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 64), max_active=4).start()
    try:
        order, lock = [], threading.Lock()

        def emit(name):
            def f(i, delta, reason, logprobs):
                with lock:
                    order.append(name)
            return f

        jobs = [Job(_ids(tok, f"job {n} says"), GenParams(max_tokens=8), emit=emit(n)) for n in "ab"]
        long = Job(_ids(tok, "long"), GenParams(max_tokens=10_000), emit=emit("c"))
        for j in jobs + [long]:
            eng.submit(j)
        for j in jobs:
            assert j.done.wait(60)
        first_a, last_b = order.index("a"), len(order) - 1 - order[::-1].index("b")
        assert first_a < last_b and "".join(x for x in order if x in "ab")[:4] not in ("aaaa", "bbbb")
        long.cancel()
        assert long.done.wait(30)
        assert eng.health()["active"] == 0 and eng.stats["cancelled"] == 1
    finally:
        eng.shutdown()


def test_a_session_is_never_used_by_two_jobs_at_once(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 64)).start()
    try:
        seen = []
        jobs = [Job(_ids(tok, f"turn {i}"), GenParams(max_tokens=6), session_id="shared",
                    emit=lambda i, d, r, lp, k=k: seen.append(k)) for k, i in enumerate(range(3))]
        for j in jobs:
            eng.submit(j)
        for j in jobs:
            assert j.done.wait(60)
        # Jobs on one session run one after another: no interleaving of their events.
        assert seen == sorted(seen)
    finally:
        eng.shutdown()


def test_failed_job_drops_its_session_and_the_engine_goes_on(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 64)).start()
    try:
        bad = Job([len(tok) + 10], GenParams(max_tokens=2), session_id="x")  # out-of-vocabulary id
        eng.submit(bad)
        assert bad.done.wait(30) and bad.error is not None and "x" not in eng.sessions
        good = eng.submit(Job(_ids(tok, "fine"), GenParams(max_tokens=2)))
        assert good.done.wait(30) and good.error is None
    finally:
        eng.shutdown()


def test_queue_full_and_empty_prompt(tiny, tok):
    eng = Engine(tiny, tok, SinkConfig(2, 64), max_queue=1)
    eng.submit(Job([1], GenParams()))
    with pytest.raises(Engine.QueueFull):
        eng.submit(Job([1], GenParams()))
    with pytest.raises(ValueError):
        Job([], GenParams())
    for chunk in (0, -3, 65):  # 0 once meant "the default" silently
        with pytest.raises(ValueError, match="prefill_chunk must be between 1 and window"):
            Engine(tiny, tok, SinkConfig(2, 64, prefill_chunk=chunk))


def test_session_store_bounds(tiny, tok):
    store = SessionStore(max_sessions=2, max_memory_mb=1000, ttl_s=3600)
    for sid in "abc":
        store.release(store.acquire(sid, lambda: SinkCache(2, 8)))
    assert list(store._items) == ["b", "c"] and store.evicted == 1
    busy = store.acquire("b", lambda: SinkCache(2, 8))
    store.release(store.acquire("d", lambda: SinkCache(2, 8)))
    assert "b" in store and "c" not in store  # the busy session survives, the idle LRU one goes
    store.release(busy)
    eng = Engine(tiny, tok, SinkConfig(2, 8))
    _run(eng, Job([5, 6, 7], GenParams(max_tokens=2), session_id="m"))
    one = cache_bytes(eng.sessions._items["m"].cache)
    assert one > 0
    small = SessionStore(max_sessions=10, max_memory_mb=1.5 * one / 2**20)
    for sid in "xyz":
        s = small.acquire(sid, lambda: SinkCache(2, 8))
        s.cache = eng.sessions._items["m"].cache
        small.release(s)
    assert len(small) == 1 and small.memory_bytes() <= 1.5 * one
    old = SessionStore(ttl_s=0.01)
    old.release(old.acquire("t", lambda: SinkCache(2, 8)))
    time.sleep(0.05)
    old.evict()
    assert len(old) == 0


def test_forked_choices_copy_filled_rows_only_and_continue_identically(tiny, tok):
    import copy

    from tenfold.streaming import enable_streaming

    model = enable_streaming(tiny)
    cache = SinkCache(2, 200)  # pre-allocates 202 columns per layer
    ids = torch.tensor([_ids(tok, "a short prompt of a few tokens")])
    with torch.no_grad():
        model(input_ids=ids, cache=cache, use_cache=True)
        fork, deep = cache.copy(), copy.deepcopy(cache)
        assert fork.nbytes() * 10 < deep.nbytes()  # only the ~8 filled columns, not the 202 allocated
        step = torch.tensor([[5]])
        a = model(input_ids=step, cache=cache, use_cache=True).logits
        b = model(input_ids=step, cache=fork, use_cache=True).logits
    assert torch.equal(a, b) and fork.tokens_seen == cache.tokens_seen


def test_n_choices_memory_counts_against_the_bound(tiny, tok):
    store = SessionStore(max_memory_mb=0.03)  # 30 kB: room for a prompt's cache, not for 7 more copies of it
    eng = Engine(tiny, tok, SinkConfig(2, 60), sessions=store)
    assert eng.sessions is store  # an empty store is falsy; it must still be the one used
    with pytest.raises(Engine.RequestTooLarge):  # could never fit: a 400, and nothing evicted for it
        _run(eng, Job(_ids(tok, "word " * 40), GenParams(max_tokens=2, n=8)))
    _run(eng, Job(_ids(tok, "hi"), GenParams(max_tokens=2, n=2)))


def test_a_refused_fork_evicts_no_session(tiny, tok):
    store = SessionStore(max_memory_mb=0.03)
    eng = Engine(tiny, tok, SinkConfig(2, 60), sessions=store)
    _run(eng, Job(_ids(tok, "a session worth keeping " * 3), GenParams(max_tokens=2), session_id="victim"))
    assert "victim" in store
    with pytest.raises(Engine.RequestTooLarge):
        _run(eng, Job(_ids(tok, "word " * 40), GenParams(max_tokens=2, n=8)))
    assert "victim" in store


def test_keep_system_holds_the_system_prompt_as_sinks(tiny, tok):
    from tenfold.streaming import enable_streaming

    system = _ids(tok, "You are a careful assistant. Always answer in French, please.")
    eng = Engine(tiny, tok, SinkConfig(2, 40), keep_max=30)
    long = system + _ids(tok, " and then " * 60)  # far past the 2+40 cache
    _run(eng, Job(long, GenParams(max_tokens=3), session_id="k", keep=len(system)))
    cache = eng.sessions._items["k"].cache
    assert cache.num_sinks == len(system) <= 30
    # the kept columns are exactly the system prompt's keys, as a fresh pass over it alone computes them
    alone = SinkCache(len(system), 40)
    with torch.no_grad():
        enable_streaming(tiny)(input_ids=torch.tensor([system]), cache=alone, use_cache=True)
    layer = cache.layers[0]  # ring mode: the sinks are kept at positions 0.. in fp32, placed per step from there
    kept = layer.sink_keys if layer.sink_keys is not None else layer.keys[:, :, : len(system)]
    assert cache.sink_delta > 0 and layer.sink_keys is not None
    assert torch.allclose(kept, alone.layers[0].keys[:, :, : len(system)], atol=1e-5)
    capped = Engine(tiny, tok, SinkConfig(2, 40), keep_max=5)
    assert capped._new_cache(len(system)).num_sinks == 5 and Engine(tiny, tok, SinkConfig(2, 40))._new_cache(99).num_sinks == 2


@pytest.mark.slow
def test_batched_rows_equal_their_batch_1_outputs(lm, tok):
    """Issue 25: eight prompts (four continuing sessions, past the 4+60 window) decoded together, one forward per
    step, give each prompt's temperature-0 output alone."""
    model, _ = lm
    prompts = [_ids(tok, f"{opening} " * reps) for opening, reps in [
        ("Once upon a time", 1), ("The capital of France is", 1), ("List three colours:", 2),
        ("It is a truth universally acknowledged", 5), ("def fibonacci(n):", 1), ("Dear Sir, I write to", 3),
        ("The weather in the mountains", 8), ("Emma Woodhouse, handsome, clever and rich,", 4)]]
    sessions = [f"s{i}" if i % 2 else None for i in range(8)]

    def outputs(engine, concurrent):
        for i, p in enumerate(prompts):  # a first turn, so that sessions continue a cache
            if sessions[i]:
                engine.run(Job(p, GenParams(max_tokens=4), session_id=sessions[i]))
        texts = [[] for _ in prompts]
        jobs = []
        for i, p in enumerate(prompts):
            history = engine.sessions._items[sessions[i]].consumed + p if sessions[i] else p
            jobs.append(Job(history, GenParams(max_tokens=24), session_id=sessions[i],
                            emit=lambda k, delta, reason, lp, i=i: texts[i].append(delta)))
        if concurrent:
            engine.start()
            engine.submit_all(jobs)
            for j in jobs:
                assert j.done.wait(300) and j.error is None, j.error
            engine.shutdown()
        else:
            for j in jobs:
                engine.run(j)
        return ["".join(t) for t in texts]

    alone = Engine(model, tok, SinkConfig(4, 60), max_active=1)
    together = Engine(model, tok, SinkConfig(4, 60), max_active=8)
    expected, got = outputs(alone, False), outputs(together, True)
    assert alone.stats["max_batch_rows"] == 1 and together.stats["max_batch_rows"] >= 6, together.stats
    assert together.stats["decoded_rows"] > 2 * together.stats["decode_steps"]
    for i, (a, b) in enumerate(zip(expected, got)):
        assert a == b, f"prompt {i}: {a!r} alone vs {b!r} batched"


def test_long_prompts_share_one_prefill_budget_per_round_so_streams_keep_their_pace(tiny, tok):
    """Review 25: each round gave *every* job still reading its prompt a chunk, so four long prompts arriving
    together put four chunks of prefill between two tokens of a running stream. A round now prefills at most one
    chunk's worth of tokens (least recently served prompts first), and every prompt still gets its turn."""
    eng = Engine(tiny, tok, SinkConfig(2, 64, prefill_chunk=8), max_active=8)
    log = []
    step = eng._prefill_step

    def logged(job, size=None):
        log.append(("p", job.id, min(len(job.pending), size or eng.config.chunk)))
        step(job, size)

    eng._prefill_step = logged
    eng.start()
    try:
        stream = Job(_ids(tok, "a short stream"), GenParams(max_tokens=120), emit=lambda *a: log.append(("d",)))
        eng.submit(stream)
        while ("d",) not in log:
            time.sleep(0.001)
        longs = [Job(_ids(tok, f"long prompt number {k}: " + "and so it goes on " * 12), GenParams(max_tokens=2))
                 for k in range(4)]
        eng.submit_all(longs)
        for j in longs:
            assert j.done.wait(60) and j.error is None
        stream.cancel()
        assert stream.done.wait(30)
    finally:
        eng.shutdown()
    gaps, fed = [], 0  # prefill tokens between consecutive tokens of the stream
    for event in log[log.index(("d",)):]:
        if event[0] == "d":
            gaps.append(fed)
            fed = 0
        elif event[1] != stream.id:
            fed += event[2]
    assert max(gaps) <= eng.config.chunk, gaps
    served = [e[1] for e in log if e[0] == "p"]
    first = {j.id: served.index(j.id) for j in longs}
    assert max(first.values()) < 4 * 3, served  # every long prompt starts within a few rounds: turns rotate


def test_a_long_prompt_is_not_starved_by_new_prompts_arriving_every_round(tiny, tok):
    """Review 25: the per-round prefill budget goes to the least recently served prompts, and a newly admitted
    prompt queues behind those already being read: a long prompt keeps advancing while a new prompt of a whole
    round's budget arrives every round (before, every new prompt went first and the long one never moved again)."""
    eng = Engine(tiny, tok, SinkConfig(2, 64, prefill_chunk=8), max_active=64)
    long = Job(_ids(tok, "and so it goes on " * 12), GenParams(max_tokens=1))
    eng.waiting.append(long)
    fed = []
    for _ in range(12):
        eng.waiting.append(Job(_ids(tok, "a new short prompt here, please") + [11], GenParams(max_tokens=1)))  # 8
        eng._admit()
        before = len(long.pending)
        eng._prefill_round([j for j in eng.active if j.pending])
        fed.append(before - len(long.pending))
        eng._round += 1
    assert sum(1 for f in fed if f) >= len(fed) // 3, fed
