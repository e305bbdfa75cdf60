"""LM backends: in-process LocalLM and OpenAICompatible against a real ``tenfold serve`` (and a failing stub for error paths)."""
import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from tenfold.errors import TenfoldError
from tenfold.prompting import LocalLM, OpenAICompatible, add_backend_args, backend_from_args

MSG = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
def test_local_and_http_backends_agree_at_temperature_zero(lm, server):
    local = LocalLM(*lm)
    remote = OpenAICompatible(server + "/v1", "smollm2-135m-instruct")
    a = local.complete(MSG, max_tokens=12)
    b = remote.complete(MSG, max_tokens=12)
    assert a == b and "Paris" in a[0]
    assert local.calls == remote.calls == 1 and local.completion_tokens > 0 and remote.completion_tokens > 0
    three = local.complete([{"role": "user", "content": "Name an animal."}], n=3, temperature=1.0, max_tokens=6)
    assert len(three) == 3 and all(isinstance(t, str) for t in three)
    stopped = local.complete([{"role": "user", "content": "Count: 1, 2, 3, 4, 5, 6"}], max_tokens=20, stop=["4"])
    assert "4" not in stopped[0]


@pytest.mark.slow
def test_http_backend_turns_4xx_into_one_clear_error(server):
    with pytest.raises(TenfoldError, match="404.*does not exist"):
        OpenAICompatible(server + "/v1", "no-such-model").complete(MSG)


def test_bad_arguments_are_rejected_before_any_call():
    backend = OpenAICompatible("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=1)
    for kwargs in ({"n": 0}, {"temperature": float("nan")}, {"max_tokens": 0}):
        with pytest.raises(TenfoldError):
            backend.complete(MSG, **kwargs)
    with pytest.raises(TenfoldError):
        backend.complete([{"role": "wizard", "content": "x"}])
    with pytest.raises(TenfoldError):
        backend.complete([])


def test_connection_refused_is_a_clear_error():
    with pytest.raises(TenfoldError, match="cannot reach"):
        OpenAICompatible("http://127.0.0.1:9/v1", "m", max_retries=1, timeout=2).complete(MSG)


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first ``fail`` requests, then a valid chat completion."""

    fail = 2
    seen = 0

    def do_POST(self):
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("content-length", 0)))
        if type(self).seen <= type(self).fail:
            body, code = {"error": {"message": "overloaded", "type": "server_error"}}, 503
        else:
            body, code = {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                          "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                       "finish_reason": "stop"}],
                          "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}, 200
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_retries_with_backoff_on_5xx():
    httpd = HTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        backend = OpenAICompatible(f"http://127.0.0.1:{httpd.server_port}/v1", "m", max_retries=3, timeout=10)
        assert backend.complete(MSG) == ["ok"] and _Flaky.seen == 3 and backend.completion_tokens == 1
        _Flaky.seen, _Flaky.fail = 0, 10
        with pytest.raises(TenfoldError, match="503"):
            OpenAICompatible(f"http://127.0.0.1:{httpd.server_port}/v1", "m", max_retries=1, timeout=10).complete(MSG)
    finally:
        httpd.shutdown()


def test_backend_cli_arguments():
    import argparse

    p = argparse.ArgumentParser()
    add_backend_args(p)
    with pytest.raises(TenfoldError, match="needs --base-url"):
        backend_from_args(p.parse_args(["--backend", "openai"]))
    with pytest.raises(TenfoldError, match="only used with"):
        backend_from_args(p.parse_args(["--base-url", "http://x/v1"]))
    remote = backend_from_args(p.parse_args(["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"]))
    assert isinstance(remote, OpenAICompatible) and remote.name == "smollm2-135m-instruct"


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tenfold", *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_generate_cli_through_a_server(server):
    r = _cli("generate", "What is the capital of France?", "--backend", "openai", "--base-url", server + "/v1",
             "--max-new-tokens", "12")
    assert r.returncode == 0 and "Paris" in r.stdout, r.stderr
    r = _cli("generate", "hi", "--backend", "openai", "--base-url", server + "/v1", "--max-new-tokens", "3", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)  # token counts as the server reports them
    assert got["text"] and got["backend"] == "openai" and 1 <= got["completion_tokens"] <= 3 and got["prompt_tokens"] > 1
    r = _cli("generate", "hi", "--backend", "openai")
    assert r.returncode != 0 and "needs --base-url" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    for flag, value in (("--device", "cpu"), ("--dtype", "float16")):  # the server's choice, not ours: refused
        r = _cli("generate", "hi", "--backend", "openai", "--base-url", server + "/v1", flag, value)
        assert r.returncode == 1 and f"{flag} is for --backend local" in r.stderr, r.stderr


def test_generate_sampling_flags_reach_the_server(server):
    """--top-p and --seed travel with a sampled request (were dropped: the server sampled with its own top_p 1)."""
    ask = ["generate", "Write one sentence about the sea.", "--backend", "openai", "--base-url", server + "/v1",
           "--max-new-tokens", "16"]
    greedy = _cli(*ask).stdout
    assert _cli(*ask, "--temperature", "1.8", "--top-p", "0.001").stdout == greedy  # top-p that keeps one token
    seeded = [_cli(*ask, "--temperature", "1.8", "--top-p", "1", "--seed", str(s)).stdout for s in (1, 1, 2)]
    assert seeded[0] == seeded[1] != seeded[2] and greedy not in seeded


_BODIES = {  # a 200 that is not a chat completion, as a misconfigured proxy or a different API sends
    "html": ("text/html", "<html>hello</html>", "not a chat completion"),
    "not json": ("application/json", "{not json", "not a chat completion"),
    "no choices": ("application/json", json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                                                   "choices": []}), r"0 choice\(s\) for n=1"),
    "null content": ("application/json", json.dumps({
        "id": "x", "object": "chat.completion", "created": 0, "model": "m",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": None}}]}),
        "a reply without text"),
}


@pytest.fixture
def odd_server():
    """``odd_server(kind)`` -> base URL of a stub that answers every POST with 200 and ``_BODIES[kind]``."""
    servers = []

    def start(kind):
        ctype, body, _ = _BODIES[kind]

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        srv = HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1"

    yield start
    for srv in servers:
        srv.shutdown()


@pytest.mark.parametrize("kind", list(_BODIES))
def test_a_200_that_is_not_a_chat_completion_is_one_clear_error(odd_server, kind):
    with pytest.raises(TenfoldError, match=_BODIES[kind][2]):
        OpenAICompatible(odd_server(kind), "m", max_retries=0).complete(MSG)


def test_a_url_the_sdk_cannot_use_is_one_line():
    with pytest.raises(TenfoldError, match="is not a usable URL"):
        OpenAICompatible("http://256.1.1.1/v1", "m")


def test_cli_verbs_on_a_server_that_answers_nonsense_fail_in_one_line(odd_server):
    """generate and stop improve (which asks the model from inside its sandbox) exit 1 with one line, never 0."""
    import subprocess
    import sys

    base = odd_server("html")
    for verb in (["generate", "hi"], ["stop", "improve", "--iterations", "1"]):
        r = subprocess.run([sys.executable, "-m", "tenfold", *verb, "--backend", "openai", "--base-url", base],
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 1, (verb, r.stdout, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "not a chat completion" in r.stderr, r.stderr
