"""``tenfold serve`` rejects bad settings with one line and a non-zero exit, before loading any model."""
import subprocess
import sys

import pytest


@pytest.mark.parametrize("args, message", [
    (["--sinks", "8", "--window", "4"], "must not be smaller than --sinks"),
    (["--window", "0"], "--window must be >= 1"),
    (["--port", "70000"], "--port must be between"),
    (["--max-active", "0"], "--max-active must be >= 1"),
    (["--default-max-tokens", "5000"], "--default-max-tokens"),
])
def test_bad_serve_settings(args, message):
    r = subprocess.run([sys.executable, "-m", "tenfold", "serve", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
