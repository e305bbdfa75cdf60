"""Running one program in the sandbox: :func:`run_program` starts the runner (``_runner.py``) in a fresh process
under the isolation :mod:`tenfold.sandbox.isolation` picks, within :class:`Limits`, calls its entry function on JSON
data, and turns what it left into a :class:`tenfold.sandbox.result.SandboxResult`."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.sandbox.circumvention import _MODULE_KIND
from tenfold.sandbox.host import _clean_env, _guard_read_roots, _remove_tree
from tenfold.sandbox.isolation import resolve_isolation
from tenfold.sandbox.readback import _loads, _read_fd, _records
from tenfold.sandbox.result import STATUSES, SandboxResult
from tenfold.sandbox.services import _serve

RUNNER = Path(__file__).with_name("_runner.py")
BLOCKED_EXIT = 86


@dataclass(frozen=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space; numpy and the interpreter need about 300 MB of it
    file_bytes: int = 4 << 20
    processes: int = 64  # RLIMIT_NPROC where the kernel applies it (not for root); the audit hook blocks fork anyway
    output_bytes: int = 16 << 10  # stdout/stderr read back

    def __post_init__(self):
        if self.wall_seconds <= 0 or self.cpu_seconds < 1 or self.memory_bytes < (64 << 20):
            raise TenfoldError("sandbox limits: wall_seconds > 0, cpu_seconds >= 1 and memory_bytes >= 64 MiB")


def run_program(source: str, entry: str, calls: list[list], limits: Limits | None = None,
                services: dict | None = None, isolation: str | None = None) -> SandboxResult:
    """Run ``source`` in the sandbox and call ``entry(*args)`` for each ``args`` in ``calls`` (JSON data).

    ``isolation``: ``auto`` (namespaces where available, else the guard; the default, or
    ``$TENFOLD_SANDBOX``), ``namespaces`` (raises :class:`IsolationRequired` where unavailable) or
    ``guard`` (the in-process guard alone: for comparisons). The result's ``isolation`` says which ran.
    The program's own failures never raise: they are statuses.

    ``services``: ``{"language_model" | "utility": (info, handler)}``; each is passed to ``entry``
    after the data arguments as a proxy object (``info`` gives its attributes: budget,
    description, ...). The proxy's calls come back here over a pipe and ``handler(payload)``
    answers them (in this process, where budgets are counted); a handler raising
    :class:`ServiceError` sends the error message back instead.
    """
    limits = limits or Limits()
    used = resolve_isolation(isolation)
    if not isinstance(source, str) or not source.strip():
        return SandboxResult("error", message="the program is empty", isolation=used)
    services = services or {}
    spec = _spec(entry, calls, limits, used, services)
    pipes = None
    if services:
        request_r, request_w = os.pipe()
        reply_r, reply_w = os.pipe()
        pipes = (request_r, request_w, reply_r, reply_w)
        spec["rpc"] = {"request_fd": request_w, "reply_fd": reply_r}
    with tempfile.TemporaryDirectory(prefix="tenfold-sandbox-") as tmp, contextlib.ExitStack() as files:
        io, work, readers = _io_dir(Path(tmp), used, source, spec, files)
        argv, env, extra_fds, as_user = _command(used, io, work)
        start = time.perf_counter()
        with open(Path(tmp) / "stdout.txt", "w+b") as out, open(Path(tmp) / "stderr.txt", "w+b") as err:
            try:
                proc = subprocess.Popen(argv, cwd=work if used == "guard" else io, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=err,
                                        start_new_session=True,
                                        pass_fds=((pipes[1], pipes[2]) if pipes else ()) + tuple(extra_fds), **as_user)
            finally:
                for fd in extra_fds:
                    os.close(fd)
            timed_out = _wait(proc, pipes, services, start, limits.wall_seconds)
            wall = time.perf_counter() - start
            stdout, stderr = _read_fd(out.fileno(), limits.output_bytes), _read_fd(err.fileno(), limits.output_bytes)
        if used == "guard":
            _remove_tree(work)  # a host dir, under the guard: however deep the program made it
        violations = _records(readers["violations.jsonl"].fileno())
        attempts = _records(readers["attempts.jsonl"].fileno())
        result_text = _read_fd(readers["result.json"].fileno(), 8 << 20)
    base = {"stdout": stdout, "stderr": stderr, "wall_seconds": wall, "violations": violations, "isolation": used,
            "attempts": attempts}
    return _result(proc.returncode, timed_out, result_text, limits, base)


def _spec(entry: str, calls: list[list], limits: Limits, used: str, services: dict) -> dict:
    """What the runner reads from ``input.json``: the entry and its calls, the forbidden modules by kind, the paths
    it may read and write under ``used``, the limits it sets, and the services it injects."""
    if used == "guard":
        roots = {"read_roots": _guard_read_roots(), "write_roots": []}
    else:
        from tenfold.sandbox import namespaces

        roots = {"read_roots": namespaces.read_roots(), "write_roots": namespaces.write_roots()}
    return {"entry": entry, "calls": calls, "forbidden_modules": sorted(_MODULE_KIND.items()), "isolation": used,
            **roots,
            "limits": {"memory_bytes": limits.memory_bytes, "cpu_seconds": limits.cpu_seconds,
                       "file_bytes": limits.file_bytes, "processes": limits.processes},
            "inject": list(services), "services": {k: info for k, (info, _) in services.items()}}


def _io_dir(tmp: Path, used: str, source: str, spec: dict, files: contextlib.ExitStack):
    """The run's files in ``tmp`` (0700): io/ with the program, its spec (``spec["workdir"]`` set here) and the
    empty files the runner writes its result and records into, opened for reading now (``readers``, closed with
    ``files``), and, under the guard, work/ (the program's work dir; under namespaces it is a tmpfs inside them, and
    io/'s files are bound one by one). Returns (io, work, readers)."""
    io = tmp / "io"
    io.mkdir(mode=0o700)
    work = tmp / "work"
    if used == "guard":
        work.mkdir(mode=0o700)
        spec["workdir"] = str(work)
    else:
        from tenfold.sandbox import namespaces

        spec["workdir"] = namespaces.INSIDE_WORK
    (io / "program.py").write_text(source, encoding="utf-8")
    (io / "input.json").write_text(json.dumps(spec), encoding="utf-8")
    readers = {}
    for name in ("result.json", "violations.jsonl", "attempts.jsonl"):
        (io / name).touch(mode=0o600)
        readers[name] = files.enter_context(open(io / name, "rb"))
    return io, work, readers


def _command(used: str, io: Path, work: Path) -> tuple[list, dict, list, dict]:
    """How to start the runner on ``io`` under ``used``: (argv, environment, descriptors to pass and close after the
    start, ``Popen``'s user and group arguments)."""
    if used == "guard":
        return [sys.executable, "-I", "-B", str(RUNNER), str(io)], _clean_env(str(work)), [], {}
    from tenfold.sandbox import namespaces

    env, as_user = {"PATH": "/usr/bin:/bin"}, namespaces.popen_user()
    namespaces.prepare_iodir(str(io))
    argv, extra_fds = namespaces.command(str(io), str(RUNNER), _clean_env(namespaces.INSIDE_WORK),
                                         seccomp=used.endswith("+seccomp"))
    return argv, env, extra_fds, as_user


def _wait(proc, pipes: tuple | None, services: dict, start: float, wall_seconds: float) -> bool:
    """Wait ``wall_seconds`` for the program (from ``start``, when it answers service calls over ``pipes``), then
    kill its whole process group whatever happened; True when the time ran out."""
    timed_out = False
    try:
        if pipes:
            os.close(pipes[1])
            os.close(pipes[2])
            timed_out = _serve(proc, pipes[0], pipes[3], services, start + wall_seconds)
        else:
            proc.wait(timeout=wall_seconds)
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        if pipes:
            for fd in (pipes[0], pipes[3]):
                try:
                    os.close(fd)
                except OSError:
                    pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the program and anything it might have left behind
        except (ProcessLookupError, PermissionError):
            pass
        proc.wait()
    return timed_out


def _result(code: int, timed_out: bool, result_text: str, limits: Limits, base: dict) -> SandboxResult:
    """The run's status from the runner's exit ``code`` and its ``result.json`` text, trusting neither: blocked,
    timeout, over the file-size limit, no (well-formed) result, or the runner's own status; ``base``: the fields
    every result carries."""
    if base["isolation"] != "guard" and code > 128:
        code = -(code - 128)  # bwrap reports a child killed by signal N as 128 + N
    violations, stderr = base["violations"], base["stderr"]
    if code == BLOCKED_EXIT or violations:
        what = violations[0]["event"] if violations else "a forbidden action"
        return SandboxResult("blocked", message=f"blocked: {what}", **base)
    if timed_out or code in (-signal.SIGXCPU, -signal.SIGKILL):
        return SandboxResult("timeout", message=f"no result within {limits.wall_seconds:g} s wall / "
                                                f"{limits.cpu_seconds} s CPU", **base)
    if code == -signal.SIGXFSZ:
        return SandboxResult("error", message=f"wrote more than {limits.file_bytes} bytes", **base)
    try:
        payload = _loads(result_text)
        status = payload["status"]
        if status not in STATUSES:
            raise ValueError(status)
        if not isinstance(payload.get("outputs", []), list) or not isinstance(payload.get("message", ""), str) or \
                not all(type(s) in (int, float) for s in payload.get("seconds", [])):
            raise ValueError("a malformed result")  # only the program itself could have written it
    except (ValueError, KeyError, TypeError):
        status = "memory" if "MemoryError" in stderr else "error"
        return SandboxResult(status, message=f"the program ended without a result (exit code {code})", **base)
    return SandboxResult(status, outputs=payload.get("outputs") or [], seconds=payload.get("seconds") or [],
                         message=payload.get("message", ""), **base)
