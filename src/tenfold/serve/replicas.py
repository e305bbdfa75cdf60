"""Several ``tenfold serve`` replicas behind nginx, each session pinned to one replica by a hash of its id.

A session's sink cache is a speed-up, never state: clients send the whole history on every turn, so any
replica can answer any turn. Pinning a session to one replica (nginx's ``hash $http_x_session_id
consistent``, a ketama ring) keeps its cache hot; when that replica dies, nginx's ``proxy_next_upstream
error timeout`` sends the turn to the next replica on the ring, which re-reads (prefills) the history once
and then caches it. Adding or removing a replica moves only about 1/N of the sessions.

nginx hashes what it can see without reading the body: the ``X-Session-Id`` header. A request with no such
header (a client that puts the session id only in the JSON ``user`` field) has an empty key, and nginx
then balances it round-robin: still answered correctly, but its turns rarely find their cache.

:func:`nginx_config` writes the configuration; :class:`Nginx` runs nginx in the foreground as the current
user with everything (pid, temp files, config) in one directory, as the tests do.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tenfold.errors import TenfoldError


# (named location, status, OpenAI error type, message, extra directives) for the errors nginx answers itself
_OWN_ERRORS = (
    ("@no_replica", 503, "service_unavailable", "no tenfold serve replica answered; retry shortly",
     "\n            add_header Retry-After 2 always;"),
    ("@body_too_large", 413, "invalid_request_error", "the request body is larger than the balancer allows (client_max_body_size)", ""),
    ("@header_too_large", 431, "invalid_request_error", "a request header is too large for the balancer", ""),
)


def nginx_config(replicas: list[str], listen: str = "127.0.0.1:8080", prefix: str | os.PathLike | None = None,
                 max_body: str = "20m", read_timeout_s: int = 600) -> str:
    """An nginx.conf that balances ``replicas`` (``HOST:PORT`` of each ``tenfold serve``) by session id.

    ``listen``: where nginx accepts clients. ``prefix``: a directory for the pid file and temp files, for
    running nginx as an ordinary user in the foreground (``nginx -p PREFIX -c nginx.conf``, logs on stderr);
    None gives the ``http {}`` part only, to drop into a system nginx's ``conf.d/``. ``max_body``: nginx's
    ``client_max_body_size`` (keep it at least each replica's ``--max-body-bytes``). ``read_timeout_s``: how
    long nginx waits between two reads of a reply (a long generation, or a slow first token).

    Raises :class:`TenfoldError` for an empty replica list or a replica that is not ``HOST:PORT``.
    """
    if not replicas:
        raise TenfoldError("give at least one replica (HOST:PORT)")
    for r in replicas:
        host, _, port = r.rpartition(":")
        if not host or not port.isdigit() or any(c.isspace() or c in ";{}" for c in r):
            raise TenfoldError(f"replica {r!r} is not HOST:PORT")
    servers = "\n".join(f"        server {r} max_fails=1 fail_timeout=10s;" for r in replicas)
    errors = "\n".join(f"""\
        location {name} {{
            default_type application/json;{extra}
            return {status} '{{"error": {{"message": "{message}", "type": "{type_}", "param": null, "code": null}}}}';
        }}""" for name, status, type_, message, extra in _OWN_ERRORS)
    http = f"""\
    # One session, one replica: the X-Session-Id header hashed onto a consistent (ketama) ring.
    # No header: an empty key, which nginx balances round-robin.
    upstream tenfold_serve {{
        hash $http_x_session_id consistent;
{servers}
        keepalive 32;
    }}
    server {{
        listen {listen};
        client_max_body_size {max_body};
        # What nginx answers itself, as the replicas answer errors: OpenAI-shaped JSON (a replica's own
        # errors pass through untouched).
        error_page 502 503 504 = @no_replica;
        error_page 413 = @body_too_large;
        error_page 494 = @header_too_large;
{errors}
        location / {{
            proxy_pass http://tenfold_serve;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            # A replica that refuses or times out: try the next one on the ring. A POST already sent
            # to a replica that then dies is not re-sent (nginx's rule for non-idempotent requests).
            proxy_next_upstream error timeout;
            proxy_connect_timeout 5s;
            proxy_read_timeout {read_timeout_s}s;
            proxy_buffering off;  # server-sent events stream token by token
            add_header X-Upstream $upstream_addr always;  # which replica answered
        }}
    }}
"""
    if prefix is None:
        return f"http {{\n{http}}}\n"
    p = Path(prefix)
    user = ""
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # as root, workers would switch to `nobody`; stay root here
        user = "user root;\n"
    temps = "\n".join(f"    {name}_temp_path {p / (name + '_temp')};"
                      for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""\
{user}daemon off;
worker_processes 1;
pid {p / 'nginx.pid'};
error_log stderr warn;
events {{
    worker_connections 1024;
}}
http {{
    access_log off;
{temps}
{http}}}
"""


def find_nginx() -> str | None:
    """The nginx binary: on PATH, or Debian's /usr/sbin/nginx (not on an ordinary user's PATH)."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


class Nginx:
    """``with Nginx(["127.0.0.1:8001", "127.0.0.1:8002"]) as lb: lb.base`` -> ``http://127.0.0.1:PORT``.

    Runs nginx in the foreground as the current user, its config, pid and temp files in a temporary directory
    and its log on stderr (read it with :meth:`log`); stopped on exit. ``port``: where it listens (default: a
    free loopback port). Raises :class:`TenfoldError` when nginx is not installed, rejects the config or does not
    answer within ``start_timeout`` seconds.
    """

    def __init__(self, replicas: list[str], port: int | None = None, start_timeout: float = 20, **config):
        from tenfold.serve.launch import free_port

        self.binary = find_nginx()
        if self.binary is None:
            raise TenfoldError("nginx is not installed (Debian: apt-get install nginx, or `make balancer` as root)")
        self.port = port or free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.dir = Path(tempfile.mkdtemp(prefix="tenfold-nginx-"))
        self.conf = self.dir / "nginx.conf"
        self.conf.write_text(nginx_config(replicas, f"127.0.0.1:{self.port}", self.dir, **config))
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen | None = None
        self._log = open(self.dir / "stderr.log", "w+")

    def log(self) -> str:
        """What nginx wrote to stderr so far."""
        return (self.dir / "stderr.log").read_text(errors="replace")

    def __enter__(self) -> "Nginx":
        argv = [self.binary, "-p", str(self.dir), "-c", str(self.conf), "-e", "stderr"]  # -e: not the built-in log path
        test = subprocess.run([*argv, "-t"], capture_output=True, text=True)
        if test.returncode != 0:
            lines = test.stderr.strip().splitlines() or ["(no message)"]
            why = next((line for line in lines if "[emerg]" in line), lines[-1])  # the last line is "test failed"
            why = re.sub(r"^.*?\[emerg\] [0-9#]+: ", "", why)  # no timestamp and pids
            self.__exit__()
            raise TenfoldError(f"nginx rejected the config: {why}")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self._log)
        deadline = time.time() + self.start_timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                why = self.log().strip()[-500:]
                self.__exit__()
                raise TenfoldError(f"nginx exited: {why}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.1)
        self.__exit__()
        raise TenfoldError(f"nginx did not listen on port {self.port} within {self.start_timeout:.0f} s")

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful: finish the requests in flight
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None
        self._log.close()
        shutil.rmtree(self.dir, ignore_errors=True)
