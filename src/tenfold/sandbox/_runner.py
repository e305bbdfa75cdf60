"""The trusted harness that runs one model-written program inside tenfold's sandbox (a separate process).

Started as ``python -I -B _runner.py WORKDIR`` by :mod:`tenfold.sandbox`; standard library and
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


# -- services the host offers (a language model, a utility), reached over two inherited pipes --------
_RPC = SPEC.get("rpc")
if _RPC:
    _replies = os.fdopen(_RPC["reply_fd"], "r", encoding="utf-8")
    _requests = os.fdopen(_RPC["request_fd"], "w", encoding="utf-8")


def _call(service, payload):
    _requests.write(json.dumps({"service": service, "payload": payload}) + "\n")
    _requests.flush()
    line = _replies.readline()
    if not line:
        raise RuntimeError("the sandbox host went away")
    reply = json.loads(line)
    if "error" in reply:
        raise RuntimeError(reply["error"])
    return reply["value"]


class LanguageModel:
    """``batch_prompt(expertise, messages, temperature)`` -> one response per message; the host counts the budget."""

    def __init__(self, info):
        self.budget, self.max_responses_per_call = info["budget"], info["max_responses_per_call"]

    def batch_prompt(self, expertise, messages, temperature=0.7):
        if isinstance(messages, str):
            messages = [messages]
        return _call("language_model", {"expertise": str(expertise), "messages": [str(m) for m in messages],
                                        "temperature": float(temperature)})


class Utility:
    """``utility(program_source)`` -> a score; ``.str`` describes it; the host counts the budget."""

    def __init__(self, info):
        self.str, self.budget = info["description"], info["budget"]

    def __call__(self, program):
        return _call("utility", {"program": str(program)})


def extract_code(responses):
    """The code in each response: the longest fenced block that compiles (programs may contain fences
    themselves, e.g. an improver's prompt), else the first fenced block, else the whole response."""
    out = []
    for text in ([responses] if isinstance(responses, str) else responses):
        lines = str(text).split("\n")
        fences = [i for i, line in enumerate(lines) if line.strip().startswith("```")]
        best = None
        for a in fences:
            for b in reversed(fences):
                if b <= a:
                    break
                code = "\n".join(lines[a + 1 : b])
                try:
                    compile(code, "<candidate>", "exec")
                except (SyntaxError, ValueError):
                    continue
                if best is None or len(code) > len(best):
                    best = code
                break
        if best is None:
            best = "\n".join(lines[fences[0] + 1 : fences[1]]) if len(fences) >= 2 else str(text)
        out.append(best.strip() + "\n")
    return out


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
    import random

    random.seed(SPEC.get("seed", 0))  # the same program on the same inputs gives the same answers
    numpy.random.seed(SPEC.get("seed", 0))
    sys.addaudithook(_hook)
    namespace = {"__name__": "program", "__builtins__": __builtins__, "extract_code": extract_code}
    injected = []
    for name in SPEC.get("inject", []):
        injected.append(LanguageModel(SPEC["services"][name]) if name == "language_model" else Utility(SPEC["services"][name]))
    outputs, seconds = [], []
    try:
        exec(compile(source, "program.py", "exec"), namespace)
        fn = namespace.get(entry)
        if not callable(fn):
            _finish({"status": "error", "message": f"the program defines no function {entry!r}"})
        for args in calls:
            start = clock()
            value = fn(*args, *injected)
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
