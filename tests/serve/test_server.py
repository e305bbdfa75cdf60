"""``tenfold serve`` over real HTTP on loopback, driven by the official openai client and raw httpx."""
import json
import threading
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key="none", max_retries=0, timeout=120)


def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == [MODEL, "all-minilm-l6-v2"]  # the chat and embedding models
    health = httpx.get(server + "/health").json()
    assert health["status"] == "ok" and health["cache"] == "4+124"
    assert health["weights"] == "float32"  # --dtype float32 reaches the model (the default would be int4)


def test_chat_streamed_equals_not_streamed(client):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0)
    text = full.choices[0].message.content
    assert "Paris" in text and full.usage.completion_tokens > 0 and full.choices[0].finish_reason in ("stop", "length")
    pieces, reasons = [], []
    for chunk in client.chat.completions.create(model=MODEL, messages=messages, max_tokens=20, temperature=0, stream=True):
        for c in chunk.choices:
            pieces.append(c.delta.content or "")
            reasons.append(c.finish_reason)
    assert "".join(pieces) == text
    assert reasons[-1] == full.choices[0].finish_reason and len(pieces) > 3


def test_completions_with_stop_and_n(client):
    out = client.completions.create(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=20, temperature=0, stop=[" 7"])
    assert out.choices[0].text.strip().startswith("5, 6") and " 7" not in out.choices[0].text
    assert out.choices[0].finish_reason == "stop"
    many = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=1.0, n=3, seed=3)
    assert [c.index for c in many.choices] == [0, 1, 2]
    again = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6, temperature=1.0, n=3, seed=3)
    assert [c.text for c in again.choices] == [c.text for c in many.choices]  # seeded sampling is reproducible


def _tokens(server, text):
    return len(httpx.post(server + "/v1/completions", json={"model": MODEL, "prompt": text, "max_tokens": 1,
                                                            "temperature": 0}).json()["usage"]["prompt_tokens"])


def test_thirty_turns_three_times_the_window(server, client):
    history, cached = [], []
    for turn in range(30):
        history.append({"role": "user", "content": f"Turn {turn}: tell me one short fact about the number {turn}."})
        out = client.chat.completions.create(model=MODEL, messages=history, max_tokens=12, temperature=0,
                                             user="thirty-turns")
        reply = out.choices[0].message.content
        assert reply.strip(), f"empty answer at turn {turn}"
        cached.append(out.usage.prompt_tokens_details.cached_tokens)
        history.append({"role": "assistant", "content": reply})
    assert out.usage.prompt_tokens >= 3 * 128, out.usage.prompt_tokens
    # Later turns feed only their new tokens: the session cache had consumed the earlier history.
    assert sum(c > 0 for c in cached[1:]) >= 25, cached


def test_session_reuse_equals_stateless_prefill_within_the_window(client):
    history = []
    for turn, question in enumerate(["Hi! Who are you?", "Name a fruit."]):
        history.append({"role": "user", "content": question})
        with_session = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0,
                                                      extra_headers={"X-Session-Id": "equal-check"})
        stateless = client.chat.completions.create(model=MODEL, messages=history, max_tokens=8, temperature=0)
        assert with_session.usage.prompt_tokens <= 124
        if turn:
            assert with_session.usage.prompt_tokens_details.cached_tokens > 0
        assert with_session.choices[0].message.content == stateless.choices[0].message.content
        history.append({"role": "assistant", "content": with_session.choices[0].message.content})


def _post(server, body, **kw):
    return httpx.post(server + "/v1/chat/completions", content=body, timeout=60, **kw)


def test_bad_requests_get_4xx_and_the_server_stays_up(server):
    ok = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3})
    headers = {"content-type": "application/json"}
    bad = {
        "malformed json": ("{not json", 400),
        "not an object": ("[1, 2]", 400),
        "missing messages": (json.dumps({"model": MODEL}), 400),
        "empty messages": (json.dumps({"model": MODEL, "messages": []}), 400),
        "bad role": (json.dumps({"model": MODEL, "messages": [{"role": "robot", "content": "x"}]}), 400),
        "unknown model": (json.dumps({"model": "gpt-17", "messages": [{"role": "user", "content": "x"}]}), 404),
        "max_tokens over cap": (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                            "max_tokens": 100000}), 400),
        "NaN temperature": ('{"model": "%s", "messages": [{"role": "user", "content": "x"}], "temperature": NaN}' % MODEL, 400),
        "n too large": (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "n": 100}), 400),
        "oversized body": (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 300_000}]}), 413),
    }
    for name, (body, status) in bad.items():
        r = _post(server, body, headers=headers)
        assert r.status_code == status, (name, r.status_code, r.text)
        err = r.json()["error"]
        assert err["message"] and err["type"], name
        assert _post(server, ok, headers=headers).status_code == 200, f"server broken after {name}"
    assert httpx.get(server + "/v1/nothing-here").status_code == 404


def test_sixteen_concurrent_streams_all_finish(server):
    results = {}

    def one(i):
        text, reason = [], None
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"Count from {i} to {i + 5}."}],
                "max_tokens": 6, "temperature": 0, "stream": True}
        with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choice = json.loads(line[6:])["choices"][0]
                    text.append(choice["delta"].get("content") or "")
                    reason = choice["finish_reason"] or reason
        results[i] = ("".join(text), reason)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert len(results) == 16 and all(r[1] in ("stop", "length") and r[0] for r in results.values()), results


def test_disconnecting_client_frees_its_slot(server):
    before = httpx.get(server + "/health").json()["cancelled"]
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Write a very long story."}], "max_tokens": 500,
            "temperature": 0.7, "stream": True}
    with httpx.stream("POST", server + "/v1/chat/completions", json=body, timeout=60) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]
        assert any('"content"' in g for g in got)
    deadline = time.time() + 30
    while time.time() < deadline:
        health = httpx.get(server + "/health").json()
        if health["active"] == 0 and health["cancelled"] > before:
            break
        time.sleep(0.2)
    assert health["active"] == 0 and health["cancelled"] > before, health
