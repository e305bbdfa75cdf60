"""Start ``tenfold serve`` in a subprocess on a free loopback port (for benchmarks, tests and scripts)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """``with ServerProcess(["--window", "252"]) as srv: srv.base`` -> ``http://127.0.0.1:PORT``; stopped on exit.

    ``command``: another OpenAI-compatible server to start instead (a peer in a benchmark), its argv with
    ``{port}`` where the port goes; it must answer ``GET /health`` with 200 once ready.
    """

    def __init__(self, args: list[str] | None = None, start_timeout: float = 300, env: dict | None = None,
                 command: list[str] | None = None):
        self.port = free_port()
        self.command = command
        self.base = f"http://127.0.0.1:{self.port}"
        self.args, self.start_timeout = list(args or []), start_timeout
        self.env = None if env is None else {**os.environ, **env}
        self.proc: subprocess.Popen | None = None
        self._log = tempfile.NamedTemporaryFile("w+", prefix="tenfold-serve-", suffix=".log", delete=False)
        self._final_log: str | None = None  # what the server wrote, kept once it has stopped and the file is gone

    def log(self) -> str:
        """Everything the server wrote to stderr so far (all of it, once stopped)."""
        if self._final_log is not None:
            return self._final_log
        with open(self._log.name, encoding="utf-8", errors="replace") as f:
            return f.read()

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def __enter__(self) -> "ServerProcess":
        import httpx

        argv = ([a.replace("{port}", str(self.port)) for a in self.command] if self.command else
                [sys.executable, "-m", "tenfold", "serve", "--port", str(self.port)]) + self.args
        self.proc = subprocess.Popen(argv,
                                     stdout=subprocess.DEVNULL, stderr=self._log, text=True, env=self.env)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.__exit__()
                raise RuntimeError(f"{argv[0]} exited: {self.log()[-2000:]}")
            try:
                if httpx.get(self.base + "/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"{argv[0]} did not start within {self.start_timeout:.0f} s: {self.log()[-2000:]}")

    def __exit__(self, *exc) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        self._final_log = self.log()  # then the temporary file goes (one was left per server start)
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass
