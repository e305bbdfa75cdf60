import os
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# `tenfold serve` compiles its decode step at start-up by default (a minute cold, ~15 s warm): the suite's dozens of
# servers decode eagerly, and tests/serve/test_compiled_serve.py starts the default (compiling) one.
os.environ.setdefault("TENFOLD_COMPILE", "0")

# A suite started as a background job (`nohup make test &`) begins with SIGINT ignored, and an ignored signal stays
# ignored across exec: the CLIs the Ctrl-C tests start would never see their SIGINT. A handler (unlike SIG_IGN)
# is reset to the default in every child, so each starts as from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# `make test` runs two pytest-xdist workers on the two cores: one torch thread each (and in the CLIs they start),
# not two threads each fighting over two cores. A caller's own OMP_NUM_THREADS is kept.
if os.environ.get("PYTEST_XDIST_WORKER") and "OMP_NUM_THREADS" not in os.environ:
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _runtimes_of_this_test(tmp_path, monkeypatch):
    """In-process ``reproduce`` runs of the tests' made-up experiments record their runtimes in a file of the test's
    own, not the user's ``$TENFOLD_HOME/runtimes.json`` (which feeds the real runs' ETA)."""
    monkeypatch.setattr("tenfold.report.fingerprint._runtimes_path", lambda: tmp_path / "runtimes.json")


@pytest.fixture(scope="session")
def lm():
    """The real bundled model, loaded once for the whole test session."""
    from tenfold.models import load_lm

    return load_lm(quantize=None)


@pytest.fixture(scope="session")
def served():
    """A real ``tenfold serve`` (bundled model, cache 4+124, no API keys) on a free loopback port."""
    from tenfold.serve.launch import ServerProcess

    with ServerProcess(["--window", "124", "--dtype", "float32", "--max-tokens-cap", "512", "--max-body-bytes", "200000",
                        "--max-prompt-tokens", "2000"], start_timeout=180) as srv:
        yield srv


@pytest.fixture(scope="session")
def server(served):
    """The base URL of :func:`served`."""
    return served.base


@pytest.fixture
def server_log(served):
    """What :func:`served` has written to stderr so far."""
    return served.log()


def _terminal_run(args, timeout=600):
    """Run ``args`` with stderr on a pseudo-terminal (progress bars show only on a terminal); (rc, stdout, stderr)."""
    import pty
    import subprocess

    master, slave = pty.openpty()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=slave, text=True)
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    out, _ = proc.communicate(timeout=timeout)
    os.close(master)
    return proc.returncode, out, seen.decode(errors="replace")


@pytest.fixture
def run_on_a_terminal():
    """``run_on_a_terminal(args, timeout=600) -> (returncode, stdout, stderr)``: stderr is a pseudo-terminal."""
    return _terminal_run
