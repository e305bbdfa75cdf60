"""N ``tenfold serve`` replicas behind nginx (issue 28): session affinity, failover, API keys passing through.

Two real replicas (bundled model) and nginx, all on loopback ports, nginx run as the current user from a
generated config (:mod:`tenfold.serve.replicas`). nginx is required: where it is missing these tests fail with
the way to install it (``make balancer``), so a missing balancer cannot hide behind a skip.
"""
import signal
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
import pytest

from tenfold.errors import TenfoldError
from tenfold.serve.launch import ServerProcess
from tenfold.serve.replicas import Nginx, find_nginx, nginx_config

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
KEY = "replica-key-789"


@pytest.fixture(scope="module")
def cluster():
    if find_nginx() is None:
        pytest.fail("nginx is not installed: run `make balancer` as root (Debian: apt-get install nginx)")
    replicas = [ServerProcess(["--window", "508", "--threads", "1", "--api-key", KEY, "--max-prompt-tokens", "2000"],
                              start_timeout=180) for _ in range(2)]
    try:
        with ThreadPoolExecutor(2) as pool:  # both load the model at once
            list(pool.map(lambda r: r.__enter__(), replicas))
        with Nginx([f"127.0.0.1:{r.port}" for r in replicas]) as lb:
            yield lb, {f"127.0.0.1:{r.port}": r for r in replicas}
    finally:
        for r in replicas:
            r.__exit__()


def _client(base, key=KEY, session=None):
    headers = {"X-Session-Id": session} if session else None
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120, default_headers=headers)


def _turn(client, history, **kw):
    """One chat turn at temperature 0: (reply text, usage, the replica nginx sent it to)."""
    raw = client.chat.completions.with_raw_response.create(model=MODEL, messages=history, max_tokens=10,
                                                           temperature=0, **kw)
    out = raw.parse()
    return out.choices[0].message.content, out.usage, raw.headers.get("x-upstream")


def test_api_keys_pass_through_the_balancer(cluster):
    lb, _ = cluster
    assert httpx.get(lb.base + "/v1/models").status_code == 401
    denied = httpx.post(lb.base + "/v1/chat/completions", json={"model": MODEL, "messages": [
        {"role": "user", "content": "hi"}], "max_tokens": 1})
    assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
    with pytest.raises(openai.AuthenticationError):
        _turn(_client(lb.base, key="not-the-key"), [{"role": "user", "content": "hi"}])
    text, _, replica = _turn(_client(lb.base), [{"role": "user", "content": "hi"}])
    assert text and replica in cluster[1]


def test_without_the_header_requests_are_spread_not_pinned(cluster):
    """The documented limitation: nginx cannot read ``user`` in the body, so those requests go round-robin."""
    lb, replicas = cluster
    seen = {_turn(_client(lb.base), [{"role": "user", "content": "hi"}], user="body-only")[2] for _ in range(4)}
    assert seen == set(replicas)


def test_a_session_stays_on_one_replica_and_fails_over_with_the_same_text(cluster):
    lb, replicas = cluster
    client = _client(lb.base, session="conversation-1")
    history, cached, used = [], [], set()
    for question in ("Hi! Who are you?", "Name a fruit.", "Name a colour."):
        history.append({"role": "user", "content": question})
        text, usage, replica = _turn(client, history)
        history.append({"role": "assistant", "content": text})
        cached.append(usage.prompt_tokens_details.cached_tokens)
        used.add(replica)
    assert len(used) == 1, used  # pinned to one replica ...
    assert cached[0] == 0 < cached[1] < cached[2], cached  # ... whose cache holds the growing history
    home = used.pop()
    (other,) = set(replicas) - {home}
    history.append({"role": "user", "content": "Name an animal."})
    # What the pinned replica answers this turn from its session cache, just before it dies.
    expected, expected_usage, _ = _turn(_client(replicas[home].base, session="conversation-1"), history)
    assert expected_usage.prompt_tokens_details.cached_tokens > cached[2]  # from the cache, not a re-prefill
    replicas[home].proc.send_signal(signal.SIGKILL)
    replicas[home].proc.wait(timeout=10)
    text, usage, replica = _turn(client, history)  # nginx: connection refused -> the next replica on the ring
    assert replica.split(", ") == [home, other], replica  # $upstream_addr: tried the dead one, answered by the other
    assert usage.prompt_tokens_details.cached_tokens == 0  # re-prefilled there ...
    assert usage.prompt_tokens == expected_usage.prompt_tokens < 508  # (a history that fits the window: README)
    assert expected.strip() and text == expected  # ... to the text the dead replica's cache gave
    history += [{"role": "assistant", "content": text}, {"role": "user", "content": "And a number?"}]
    _, usage, replica = _turn(client, history)
    assert replica.split(", ")[-1] == other and usage.prompt_tokens_details.cached_tokens > 0  # the session lives on there now


def test_config_rejects_bad_replicas():
    with pytest.raises(TenfoldError, match="at least one replica"):
        nginx_config([])
    with pytest.raises(TenfoldError, match="not HOST:PORT"):
        nginx_config(["127.0.0.1"])
    with pytest.raises(TenfoldError, match="not HOST:PORT"):
        nginx_config(["a:1; evil"])
    assert "hash $http_x_session_id consistent;" in nginx_config(["10.0.0.1:8000", "10.0.0.2:8000"])
    lb = Nginx(["127.0.0.1:99999"])  # passes the HOST:PORT check; nginx itself refuses the port
    with pytest.raises(TenfoldError, match=r"^nginx rejected the config: invalid port in upstream \"127.0.0.1:99999\""):
        lb.__enter__()
    assert not lb.dir.exists()  # its temporary directory is gone


def test_a_missing_nginx_is_one_clear_error(monkeypatch):
    from tenfold.serve import replicas

    monkeypatch.setattr(replicas, "find_nginx", lambda: None)
    with pytest.raises(TenfoldError, match=r"nginx is not installed \(Debian: apt-get install nginx"):
        replicas.Nginx(["127.0.0.1:1"])


def test_the_balancers_own_errors_are_openai_json():
    """What nginx answers itself (no replica reachable, a header or body too large) is an OpenAI-shaped JSON error a
    client can read, not nginx's HTML page; with every replica down it is a 503 to retry, not a bare 502."""
    from tenfold.serve.launch import free_port

    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    with Nginx(dead, max_body="1k") as lb:
        down = httpx.post(lb.base + "/v1/chat/completions", json={}, headers={"X-Session-Id": "s1"})
        assert down.status_code == 503 and down.headers["retry-after"]
        assert down.json()["error"]["type"] == "service_unavailable"
        for headers, kw, status in (({"X-Session-Id": "x" * 20000}, {}, 431), ({}, {"content": b"x" * 5000}, 413)):
            r = httpx.post(lb.base + "/v1/chat/completions", headers=headers, **kw)
            assert r.status_code == status, r.text
            assert r.json()["error"]["type"] == "invalid_request_error"
