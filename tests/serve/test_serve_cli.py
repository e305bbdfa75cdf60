"""``tenfold serve`` rejects bad settings with one line and a non-zero exit, before loading any model."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["--sinks", "8", "--window", "4"], "must not be smaller than --sinks"),
    (["--window", "0"], "--window: must be at least 1"),
    (["--window", "64", "--prefill-chunk", "65"], "--prefill-chunk (65) must not be larger than --window (64)"),
    (["--port", "70000"], "--port must be between"),
    (["--max-active", "0"], "--max-active must be >= 1"),
    (["--default-max-tokens", "5000"], "--default-max-tokens"),
    (["--max-stored-responses", "0"], "--max-stored-responses must be >= 1"),
    (["--allowed-hosts", "a.*.example"], "--allowed-hosts: 'a.*.example' is not a host name"),
    (["--allowed-hosts", " , "], "--allowed-hosts is empty"),
    (["--truncation", "sometimes"], "invalid choice"),
])
def test_bad_serve_settings(args, message):
    r = subprocess.run([sys.executable, "-m", "tenfold", "serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_port_in_use_or_an_unknown_host_is_one_line_before_the_model_loads():
    """Both used to load the model, print "on http://HOST:PORT/v1", then end with uvicorn's own "ERROR: ..." line
    and exit 3."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "tenfold", "serve", "--port", str(port)], capture_output=True,
                           text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"tenfold: error: cannot listen on 127.0.0.1:{port}") and "in use" in r.stderr
    r = subprocess.run([sys.executable, "-m", "tenfold", "serve", "--host", "no such host", "--port", "8123"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "--host" in r.stderr, r.stderr


def test_allowed_hosts_default_to_loopback_names_on_a_loopback_address():
    from tenfold.serve.cli import allowed_hosts

    assert allowed_hosts(None, "127.0.0.1") == allowed_hosts(None, "::1") == ["localhost", "127.0.0.1", "[::1]"]
    assert allowed_hosts(None, "0.0.0.0") == ["*"] and allowed_hosts(None, "10.1.2.3") == ["*"]
    assert allowed_hosts("Chat.Example, *.lan", "127.0.0.1") == ["chat.example", "*.lan"]
