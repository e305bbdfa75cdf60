"""Serve options reach the engine, and API keys keep tenants apart (a real ``tenfold serve`` over loopback)."""
import time

import httpx
import openai
import pytest

from tenfold.serve.launch import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
K1, K2 = "key-one-123", "key-two-456"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory):
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# team keys\n{K2}\n\n")
    with ServerProcess(["--window", "124", "--api-key", K1, "--api-key-file", str(key_file), "--max-sessions", "3",
                        "--session-ttl", "6", "--threads", "1", "--allowed-origins", "http://app.example",
                        "--truncation", "disabled", "--max-stored-responses", "3"],
                       start_timeout=180) as srv:
        yield srv


def _chat(base, key, messages, user=None, **extra):
    client = openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)
    return client.chat.completions.create(model=MODEL, messages=messages, max_tokens=6, temperature=0, user=user,
                                          **extra)


def test_requests_need_a_valid_key_and_health_stays_open(keyed):
    open_health = httpx.get(keyed.base + "/health")
    assert open_health.status_code == 200 and set(open_health.json()) == {"status", "model"}  # no tenants' counters
    health = httpx.get(keyed.base + "/health", headers={"Authorization": f"Bearer {K1}"}).json()
    assert "sessions" in health
    assert health["weights"] == "int4"  # issue 25: the bundled model is served in int4 unless --dtype says otherwise
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {K1}"}):
        r = httpx.get(keyed.base + "/v1/models", headers=headers)
        assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error", (headers, r.text)
    with pytest.raises(openai.AuthenticationError):
        _chat(keyed.base, "not-a-key", [{"role": "user", "content": "hi"}])
    for key in (K1, K2):  # one from --api-key, one from --api-key-file
        assert httpx.get(keyed.base + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200


def test_env_key_is_read():
    from tenfold.serve.cli import read_api_keys

    assert read_api_keys(["a"], None, env={"TENFOLD_API_KEY": "b"}) == ["a", "b"]


def test_one_key_cannot_wipe_or_probe_another_keys_session(keyed):
    history = [{"role": "user", "content": "My name is Ada. Please remember it."}]
    first = _chat(keyed.base, K1, history, user="shared-name")
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "What is my name?"}]
    # Key two guesses key one's exact transcript under the same user id: its own namespace, so no cache hit
    # (the side channel: cached_tokens must not reveal whether the guess matches) ...
    probe = _chat(keyed.base, K2, history, user="shared-name")
    assert probe.usage.prompt_tokens_details.cached_tokens == 0
    # ... and key one's session was not wiped by it: its next turn reuses the cached prefix.
    second = _chat(keyed.base, K1, history, user="shared-name")
    assert second.usage.prompt_tokens_details.cached_tokens > 0


def test_session_options_reach_the_engine(keyed):
    headers = {"Authorization": f"Bearer {K1}"}

    def sessions():
        return httpx.get(keyed.base + "/health", headers=headers).json()["sessions"]

    for i in range(6):
        _chat(keyed.base, K1, [{"role": "user", "content": f"Say the number {i}."}], user=f"many-{i}")
        assert sessions() <= 1  # --max-sessions 3 shared by two keys: one session each
    deadline = time.time() + 20
    while time.time() < deadline and sessions():
        time.sleep(0.5)
    health = httpx.get(keyed.base + "/health", headers=headers).json()
    assert health["sessions"] == 0, health  # --session-ttl 6: idle sessions go without any new request
    assert health["threads"] == 1  # --threads 1


def test_cors_only_for_allowed_origins(keyed):
    pre = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    ok = httpx.options(keyed.base + "/v1/chat/completions", headers=pre)
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"
    bad = httpx.options(keyed.base + "/v1/chat/completions", headers={**pre, "Origin": "http://evil.example"})
    assert bad.status_code == 400 and "access-control-allow-origin" not in bad.headers


def test_without_keys_the_server_says_sessions_are_shared(server_log):
    assert "sessions are shared by all clients" in server_log


def test_metrics_need_a_key_when_keys_are_set(keyed):
    assert httpx.get(keyed.base + "/metrics").status_code == 401
    r = httpx.get(keyed.base + "/metrics", headers={"Authorization": f"Bearer {K2}"})
    assert r.status_code == 200 and "tenfold_requests_total" in r.text


def test_stored_responses_are_the_keys_own_and_bounded(keyed):
    """A stored response is its key's: another key can neither read, delete nor continue it. Each key keeps at
    most --max-stored-responses (3 here), least recently used out first."""
    one = openai.OpenAI(base_url=keyed.base + "/v1", api_key=K1, max_retries=0, timeout=120)
    two = openai.OpenAI(base_url=keyed.base + "/v1", api_key=K2, max_retries=0, timeout=120)
    mine = one.responses.create(model=MODEL, input="Hello", max_output_tokens=3, temperature=0)
    for attempt in (lambda: two.responses.retrieve(mine.id), lambda: two.responses.delete(mine.id),
                    lambda: two.responses.create(model=MODEL, input="Go on", previous_response_id=mine.id,
                                                 max_output_tokens=3)):
        with pytest.raises(openai.NotFoundError):
            attempt()
    assert one.responses.retrieve(mine.id).id == mine.id
    for _ in range(3):
        one.responses.create(model=MODEL, input="Hi", max_output_tokens=2, temperature=0)
    with pytest.raises(openai.NotFoundError):
        one.responses.retrieve(mine.id)  # the fourth newer response pushed it out


def test_truncation_flag_sets_what_a_request_does_not_say(keyed):
    """--truncation disabled (here): a conversation that, with max_output_tokens, does not fit the 4+124 cache is
    refused with context_length_exceeded; the request's own truncation 'auto' lets the sink cache go on."""
    one = openai.OpenAI(base_url=keyed.base + "/v1", api_key=K1, max_retries=0, timeout=120)
    long = "Tell me about rivers. " * 20
    with pytest.raises(openai.BadRequestError) as refused:
        one.responses.create(model=MODEL, input=long, max_output_tokens=4, temperature=0)
    assert refused.value.body["code"] == "context_length_exceeded"
    ok = one.responses.create(model=MODEL, input=long, max_output_tokens=4, temperature=0, truncation="auto")
    assert ok.truncation == "auto" and ok.usage.input_tokens > 128
    short = one.responses.create(model=MODEL, input="Hi", max_output_tokens=4, temperature=0)
    assert short.truncation == "disabled"


def test_no_key_evicts_another_keys_sessions_or_sees_its_counters(keyed):
    """Issue 38 D6: the session LRU was shared by all keys (one key could evict another's sessions, and watch its
    own cached_tokens to tell when another key was busy), and /health showed every key the global counters. Each
    key now has its own share of --max-sessions and only sees its own counters."""
    history = [{"role": "user", "content": "Remember the word lantern."}]
    first = _chat(keyed.base, K1, history, user="k1-keeps")
    history += [{"role": "assistant", "content": first.choices[0].message.content},
                {"role": "user", "content": "Which word?"}]
    before = httpx.get(keyed.base + "/health", headers={"Authorization": f"Bearer {K1}"}).json()
    for i in range(4):  # key two churns through more sessions than the whole server holds
        _chat(keyed.base, K2, [{"role": "user", "content": f"Number {i}."}], user=f"k2-churn-{i}")
    again = _chat(keyed.base, K1, history, user="k1-keeps")
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # key one's session survived
    after = httpx.get(keyed.base + "/health", headers={"Authorization": f"Bearer {K1}"}).json()
    assert after["completed"] == before["completed"] + 1  # key two's four requests are not in key one's counters
    assert after["sessions"] == 1 and after["sessions_evicted"] == before["sessions_evicted"]
    two = httpx.get(keyed.base + "/health", headers={"Authorization": f"Bearer {K2}"}).json()
    assert two["sessions"] == 1 and two["sessions_evicted"] >= 3 and "decoded_rows" not in two


def test_anthropic_clients_get_anthropic_shaped_auth_errors(keyed):
    r = httpx.post(keyed.base + "/v1/messages", json={"model": MODEL, "max_tokens": 2, "messages": []},
                   headers={"x-api-key": "wrong"})
    assert r.status_code == 401 and r.json()["type"] == "error" and r.json()["error"]["type"] == "authentication_error"
    ok = httpx.post(keyed.base + "/v1/messages/count_tokens", headers={"x-api-key": K1},
                    json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]})
    assert ok.status_code == 200 and ok.json()["input_tokens"] > 0
