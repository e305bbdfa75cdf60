"""The trusted harness that runs one model-written program inside tenfold's sandbox (a separate process).

Started as ``python -I -B _runner.py WORKDIR`` by :mod:`tenfold.stop.sandbox`; standard library and
numpy only. It lowers its own resource limits, installs an audit hook (which a program cannot
remove) that ends the process at the first forbidden action, loads ``WORKDIR/program.py`` and calls
its entry function once per input, writing plain-JSON outputs to ``WORKDIR/result.json``.
"""
import json
import os
import resource
import sys
import time

BLOCKED_EXIT = 86
WORKDIR = os.path.realpath(sys.argv[1])
with open(os.path.join(WORKDIR, "input.json"), encoding="utf-8") as f:
    SPEC = json.load(f)
LIMITS = SPEC["limits"]

import numpy  # noqa: E402  (loaded before the hook so programs may use it)

_VIOLATIONS = os.open(os.path.join(WORKDIR, "violations.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
_write, _exit, _realpath, _fspath = os.write, os._exit, os.path.realpath, os.fspath
_FORBIDDEN_MODULES = frozenset(SPEC["forbidden_modules"])
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
_ALWAYS_BLOCKED = frozenset({
    "os.fork", "os.forkpty", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "subprocess.Popen",
    "os.kill", "os.killpg", "socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo",
    "socket.gethostbyname", "ctypes.dlopen", "ctypes.dlsym", "ctypes.cdata", "resource.setrlimit",
    "resource.prlimit", "sys.setrecursionlimit", "os.putenv", "os.unsetenv", "os.chdir", "pty.spawn",
    "urllib.Request", "webbrowser.open", "os.setuid", "os.setgid", "sys.remote_exec",
})
_PATH_EVENTS = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
                          "os.chown", "os.truncate", "os.utime", "os.chflags", "os.mkfifo", "os.mknod",
                          "shutil.rmtree", "shutil.move", "shutil.copyfile"})


def _inside(path) -> bool:
    try:
        p = _fspath(path)
        if isinstance(p, bytes):
            p = p.decode("utf-8", "replace")
        if isinstance(p, int):  # a file descriptor: already opened under the rules
            return True
        full = _realpath(p if p.startswith("/") else WORKDIR + "/" + p)
    except Exception:
        return False
    return full == WORKDIR or full.startswith(WORKDIR + "/")


def _blocked(event: str, detail: str) -> None:
    _write(_VIOLATIONS, (json.dumps({"event": event, "detail": detail[:200]}) + "\n").encode())
    _exit(BLOCKED_EXIT)


def _hook(event, args):
    if event in _ALWAYS_BLOCKED:
        _blocked(event, repr(args)[:200])
    elif event == "import":
        name = str(args[0]) if args else ""
        if name.split(".")[0] in _FORBIDDEN_MODULES:
            _blocked("import", name)
    elif event == "open":
        path, mode, flags = (list(args) + [None, None, None])[:3]
        writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS)
        if writing and path is not None and not _inside(path):
            _blocked("open-for-writing", str(path))
    elif event in _PATH_EVENTS:
        paths = [a for a in args[:2] if isinstance(a, (str, bytes, os.PathLike))]
        if not all(_inside(p) for p in paths):
            _blocked(event, repr(args)[:200])


def _plain(value):
    if isinstance(value, numpy.ndarray):
        return value.tolist()
    if isinstance(value, numpy.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"the program returned a {type(value).__name__}, not plain data")


def _finish(payload: dict) -> None:
    with open(os.path.join(WORKDIR, "result.json"), "w", encoding="utf-8") as f:
        json.dump(payload, f)
    sys.stdout.flush()
    _exit(0)


def main() -> None:
    mem = LIMITS["memory_bytes"]
    for kind, value in ((resource.RLIMIT_AS, mem), (resource.RLIMIT_DATA, mem),
                        (resource.RLIMIT_CPU, LIMITS["cpu_seconds"]), (resource.RLIMIT_FSIZE, LIMITS["file_bytes"]),
                        (resource.RLIMIT_CORE, 0), (resource.RLIMIT_NPROC, LIMITS["processes"])):
        try:
            resource.setrlimit(kind, (value, value))
        except (ValueError, OSError):
            pass  # e.g. a limit already lower than asked
    with open(os.path.join(WORKDIR, "program.py"), encoding="utf-8") as f:
        source = f.read()
    calls, entry = SPEC["calls"], SPEC["entry"]
    clock = time.perf_counter
    sys.addaudithook(_hook)
    namespace = {"__name__": "program", "__builtins__": __builtins__}
    outputs, seconds = [], []
    try:
        exec(compile(source, "program.py", "exec"), namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            _finish({"status": "error", "message": f"the program defines no function {entry!r}"})
        for args in calls:
            start = clock()
            value = fn(*args)
            seconds.append(clock() - start)
            outputs.append(_plain(value))
    except MemoryError:
        _finish({"status": "memory", "message": "the program ran out of memory", "outputs": outputs})
    except RecursionError:
        _finish({"status": "error", "message": "maximum recursion depth exceeded", "outputs": outputs})
    except BaseException as exc:  # the program's own failure, reported, never raised here
        _finish({"status": "error", "message": f"{type(exc).__name__}: {str(exc)[:300]}", "outputs": outputs})
    _finish({"status": "ok", "outputs": outputs, "seconds": seconds})


main()
