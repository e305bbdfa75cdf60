"""Ctrl-C stops a probing run within a second or two: queued requests are never sent, a request in flight does not
hold the process, what was answered stays in the cache; a run whose requests failed exits non-zero."""
import json
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from tenfold.lmm.backends import BackendError, VisionBackend
from tenfold.lmm.runner import CACHE, run_suite
from tenfold.lmm.suite import parse_suite


def _suite(tmp_path, n=10):
    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "a.png")
    data = {"name": "t", "samples": [{"id": f"q{k}", "category": "attributes", "images": ["a.png"],
                                      "prompt": f"What colour is {k}?", "answer": "red"} for k in range(n)]}
    (tmp_path / "suite.json").write_text(json.dumps(data))
    return parse_suite(data)


class Slow(VisionBackend):
    name = "slow"

    def __init__(self, seconds):
        self.seconds, self.calls, self.lock = seconds, 0, threading.Lock()

    def answer(self, messages, max_tokens=32):
        with self.lock:
            self.calls += 1
        time.sleep(self.seconds)
        return "red"


def test_an_interrupt_in_the_caller_stops_the_run_and_sends_nothing_queued(tmp_path):
    suite = _suite(tmp_path)
    backend = Slow(0.3)

    def interrupt(done, total):
        raise KeyboardInterrupt

    t0 = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_suite(suite, tmp_path, backend, tmp_path / "run", concurrency=2, progress=interrupt)
    assert time.perf_counter() - t0 < 2
    time.sleep(0.8)  # the two requests in flight finish; none is started after the interrupt
    assert backend.calls <= 3
    answered = (tmp_path / "run" / CACHE).read_text().splitlines()
    assert 1 <= len(answered) <= 3  # what was answered before the interrupt is kept for the next run


class _Busy(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that is always busy: 503 with Retry-After: 1 (the SDK waits, then retries)."""

    requests = 0

    def do_POST(self):  # noqa: N802
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(503)
        self.send_header("Retry-After", "1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_sdks_retries_stop_with_the_run(tmp_path):
    """Retries are the openai SDK's (issue 29); Ctrl-C during its back-off ends the run at once, and the retry
    that follows the back-off is never sent (a paid API is not asked again)."""
    import _thread

    from tenfold.lmm.backends import OpenAIVision

    suite = _suite(tmp_path, n=2)
    _Busy.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Busy)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = OpenAIVision(f"http://127.0.0.1:{server.server_address[1]}/v1", "m", max_retries=3)
        threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C while the SDK waits out Retry-After
        t0 = time.perf_counter()
        with pytest.raises(KeyboardInterrupt):
            run_suite(suite, tmp_path, backend, tmp_path / "run", concurrency=1)
        assert time.perf_counter() - t0 < 1.5
        time.sleep(2.5)  # past the back-off: the SDK's retry meets the stopped run
        assert _Busy.requests == 1
    finally:
        server.shutdown()


class _Hanging(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that takes 30 s to answer (a slow paid API)."""

    requests = 0

    def do_POST(self):  # noqa: N802
        type(self).requests += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        time.sleep(30)
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hanging_server():
    _Hanging.requests = 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hanging)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


def test_ctrl_c_stops_lmm_run_within_seconds(tmp_path, hanging_server):
    _suite(tmp_path)
    port = hanging_server.server_address[1]
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "lmm", "run", str(tmp_path / "suite.json"), "--backend",
                             "openai", "--base-url", f"http://127.0.0.1:{port}/v1", "--model", "m", "--out",
                             str(tmp_path / "run"), "--concurrency", "2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while _Hanging.requests < 2 and time.time() < deadline:
        time.sleep(0.1)
    assert _Hanging.requests == 2
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert time.time() - t0 < 3
    assert proc.returncode == 130 and err.strip() == "tenfold: interrupted" and out == ""
    assert _Hanging.requests == 2  # the eight queued requests were never sent
    assert not (tmp_path / "run" / "results.jsonl").exists() and not (tmp_path / "run" / "report.html").exists()


def test_a_run_with_failed_requests_exits_non_zero(tmp_path, capsys, monkeypatch):
    from tenfold.cli import main

    _suite(tmp_path, n=3)

    class Down(VisionBackend):
        name = "down"

        def answer(self, messages, max_tokens=32):
            raise BackendError("connection refused")

    monkeypatch.setattr("tenfold.lmm.cli.backend_from_args", lambda args: Down())
    rc = main(["lmm", "run", str(tmp_path / "suite.json"), "--out", str(tmp_path / "run"), "--retries", "0", "--json"])
    out = capsys.readouterr()
    assert rc == 1 and json.loads(out.out)["errors"] == 3
    assert out.err.strip().splitlines()[-1].startswith("tenfold: error: 3 of 3 requests failed (first: ")
