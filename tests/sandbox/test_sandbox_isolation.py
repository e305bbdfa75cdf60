"""The sandbox as a boundary (issue 27): hostile programs that score only if their escape works.

Each hostile program returns data (status ``ok``) only when its escape succeeded, and raises
otherwise; every one must end ``blocked``, ``error``, ``timeout`` or ``memory``, and leave nothing
behind: the secret does not come back, the host file is untouched, the victim process lives, the
loopback server saw no connection.

They run twice: as written (the audit hook meets them first) and, inside the namespaces, with the
hook switched off first (``import __main__`` and empty its tables: CPython says audit hooks are no
sandbox, and this is how little it takes), so that only the operating system stands in the way.
Namespaces are required here (``isolation="namespaces"``): where bubblewrap cannot run these tests
fail rather than skip, so a missing boundary cannot hide behind a skip.
"""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import tenfold
from tenfold.sandbox import (CIRCUMVENTION_KINDS, IsolationRequired, Limits, fallback_warning, isolation_status,
                             namespaces, run_program)

FAST = Limits(wall_seconds=8, cpu_seconds=3)
CONTAINED = {"blocked", "error", "timeout", "memory"}
SECRET = "tenfold-secret-7f3a9c"

# switches the runner's audit hook off from inside the program (module globals of __main__, the runner)
BYPASS = """
import __main__ as _m
_m._ALWAYS_BLOCKED = {}
_m._BLOCKED_PREFIXES = ()
_m._FORBIDDEN_MODULES = {}
_m._PATH_EVENTS = frozenset()
_m.GUARD_ONLY = False
_m._READ_ROOTS = ("/",)
_m._WRITE_ROOTS = ("/",)
"""

HOSTILE = {
    "read a secret file outside the work dir": ("""
def algorithm(paths):
    for p in paths:
        try:
            with open(p) as f:
                return f.read()
        except OSError:
            pass
    raise RuntimeError("nothing readable")
""", lambda ctx: [[[str(ctx["secret_file"]), tenfold.__file__]]]),
    "read /root and /etc files": ("""
import os
def algorithm():
    got = {}
    for p in ("/etc/passwd", "/etc/shadow", "/etc/hostname", "/etc/hosts", "/etc/os-release", "/etc/resolv.conf",
              "/root/.bashrc", "/root/.profile", "/root/.bash_history"):
        try:
            with open(p) as f:
                got[p] = f.read()
        except OSError:
            pass
    for d in ("/root", "/etc", "/home"):
        try:
            names = [n for n in os.listdir(d) if n not in (".pyenv", "ld.so.cache")]
            if names:
                got[d] = names
        except OSError:
            pass
    if not got:
        raise RuntimeError("nothing readable")
    return got
""", lambda ctx: [[]]),
    "list other processes in /proc": ("""
import os
def algorithm(marker):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline") as f:
                    if marker in f.read():
                        return pid
            except OSError:
                pass
    raise RuntimeError("the victim is not visible")
""", lambda ctx: [[ctx["marker"]]]),
    "read another process's environ": ("""
import os
def algorithm(secret):
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if secret.encode() in f.read():
                        return pid
            except OSError:
                pass
    raise RuntimeError("no environ with the secret")
""", lambda ctx: [[SECRET]]),
    "connect to a loopback server": ("""
import socket
def algorithm(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    s.sendall(b"escaped")
    return "connected"
""", lambda ctx: [[ctx["port"]]]),
    "resolve a host name": ("""
import socket
def algorithm():
    for name in ("localhost", "example.com", "pypi.org"):
        try:
            return socket.getaddrinfo(name, 80)[0][4][0]
        except OSError:
            pass
    raise RuntimeError("no name resolved")
""", lambda ctx: [[]]),
    "fork": ("""
import os
def algorithm():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid
""", lambda ctx: [[]]),
    "fork bomb (bounded)": ("""
import os, time
def algorithm():
    kids = 0
    for _ in range(48):
        pid = os.fork()
        if pid == 0:
            time.sleep(4)
            os._exit(0)
        kids += 1
    return kids
""", lambda ctx: [[]]),
    "exec a shell": ("""
import os
def algorithm():
    for shell in ("/bin/sh", "/usr/bin/sh", "/bin/bash", "/usr/bin/bash"):
        try:
            os.execv(shell, [shell, "-c", "exit 0"])
        except OSError:
            pass
    raise RuntimeError("no shell")
""", lambda ctx: [[]]),
    "ctypes calls (raw fork, new user namespace)": ("""
import ctypes
def algorithm():
    libc = ctypes.CDLL(None, use_errno=True)
    pid = libc.fork()
    if pid == 0:
        libc._exit(0)
    if pid > 0:
        return "forked"
    if libc.unshare(0x10000000) == 0:  # CLONE_NEWUSER: full capabilities in a fresh user namespace
        return "new user namespace"
    raise OSError(ctypes.get_errno(), "refused")
""", lambda ctx: [[]]),
    "allocate 8 GB": ("""
def algorithm():
    return len(bytearray(8 * 1024 ** 3))
""", lambda ctx: [[]]),
    "loop forever": ("""
def algorithm():
    while True:
        pass
""", lambda ctx: [[]]),
    "write outside the work dir": ("""
def algorithm(paths):
    for p in paths:
        try:
            with open(p, "w") as f:
                f.write("escaped")
            return p
        except OSError:
            pass
    raise RuntimeError("nothing writable")
""", lambda ctx: [[[str(ctx["victim_file"]), "/opt/python/escaped", "/opt/lib/numpy/escaped", "/usr/lib/escaped",
                    "/escaped", "/etc/escaped", "/proc/sys/kernel/hostname"]]]),
    "write kernel settings in /proc/sys": ("""
import os
def algorithm():
    # only asks (access) for the host's settings; writes only the hostname, which is the sandbox's own
    writable = [p for p in ("/proc/sys/kernel/core_pattern", "/proc/sys/vm/swappiness", "/proc/sysrq-trigger",
                            "/proc/sys/kernel/hostname") if os.access(p, os.W_OK)]
    with open("/proc/sys/kernel/hostname", "w") as f:
        f.write("escaped")
    return writable
""", lambda ctx: [[]]),
    "write a huge file": ("""
def algorithm():
    chunk = b"x" * (1 << 20)
    with open("big.bin", "wb") as f:
        for _ in range(256):
            f.write(chunk)
    with open("/tmp/big.bin", "wb") as f:
        for _ in range(256):
            f.write(chunk)
    return "wrote 512 MB"
""", lambda ctx: [[]]),
    "kill its parent": ("""
import os
def algorithm(host_pid):
    os.kill(host_pid, 0)  # signal 0: only asks whether it could be killed
    return "could signal the host"
""", lambda ctx: [[os.getpid()]]),
    "find and use an inherited file descriptor": ("""
import os
def algorithm(secret):
    for fd in range(3, 256):
        try:
            os.lseek(fd, 0, 0)
            data = os.read(fd, 4096)
            if secret.encode() in data:
                return data.decode()
        except OSError:
            pass
        try:
            return os.listdir(fd)  # a directory descriptor opens the host's tree
        except (OSError, TypeError, ValueError):
            pass
    raise RuntimeError("no inherited descriptor")
""", lambda ctx: [[SECRET]]),
}


@pytest.fixture(scope="module")
def host():
    """A secret file, a victim process with a secret in its environment, a loopback server."""
    tmp = Path(tempfile.mkdtemp(prefix="tenfold-hostile-"))
    secret_file = tmp / "secret.txt"
    secret_file.write_text(SECRET)
    marker = "tenfold-victim-4b1d"
    victim = subprocess.Popen([sys.executable, "-c", "import time, sys; time.sleep(600)", marker],
                              env={"TENFOLD_VICTIM_SECRET": SECRET, "PATH": "/usr/bin"})
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def serve():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(conn.recv(100))
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    # an inherited secret and an inherited directory, as careless callers leave them
    fd_file, fd_dir = os.open(secret_file, os.O_RDONLY), os.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd_file, True)
    os.set_inheritable(fd_dir, True)
    yield {"secret_file": secret_file, "marker": marker, "port": server.getsockname()[1], "accepted": accepted,
           "victim": victim, "tmp": tmp}
    os.close(fd_file)
    os.close(fd_dir)
    server.close()
    victim.kill()
    victim.wait()


def _check_contained(r, ctx, victim_file):
    assert r.status in CONTAINED, (r.status, r.outputs, r.message, r.stderr[-300:])
    assert r.status != "ok" and not r.outputs
    text = json.dumps([r.outputs, r.message, r.stdout, r.stderr, r.violations, r.attempts])
    assert SECRET not in text
    assert victim_file.read_text() == "keep me"
    assert ctx["victim"].poll() is None  # still alive
    assert ctx["accepted"] == []  # the loopback server saw nobody
    assert not any(Path(p).exists() for p in ("/opt/python/escaped", "/escaped", "/etc/escaped", "/usr/lib/escaped"))


@pytest.mark.parametrize("bypass", [False, True], ids=["hook-on", "hook-bypassed"])
@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_never_scores(name, bypass, host, tmp_path):
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("keep me")
    source, args = HOSTILE[name]
    ctx = dict(host, victim_file=victim_file)
    r = run_program((BYPASS if bypass else "") + source, "algorithm", args(ctx), FAST, isolation="namespaces")
    assert r.isolation.startswith("namespaces")
    _check_contained(r, ctx, victim_file)


@pytest.mark.parametrize("name", [n for n in HOSTILE if n not in ("loop forever", "allocate 8 GB")])
def test_hostile_program_never_scores_under_the_guard_alone(name, host, tmp_path):
    """The fallback still contains the hostile programs as written (not once its hook is switched off)."""
    victim_file = tmp_path / "victim.txt"
    victim_file.write_text("keep me")
    source, args = HOSTILE[name]
    ctx = dict(host, victim_file=victim_file)
    r = run_program(source, "algorithm", args(ctx), FAST, isolation="guard")
    assert r.isolation == "guard"
    _check_contained(r, ctx, victim_file)


def test_the_hook_really_is_switched_off_by_the_bypass():
    """So the hook-bypassed runs above meet the operating system alone."""
    r = run_program(BYPASS + "import ctypes\ndef algorithm():\n    return ctypes.CDLL(None).getpid()\n",
                    "algorithm", [[]], FAST, isolation="namespaces")
    assert r.status == "ok" and r.outputs[0] > 0 and not r.violations
    blocked = run_program("import ctypes\ndef algorithm():\n    return ctypes.CDLL(None).getpid()\n", "algorithm",
                          [[]], FAST, isolation="namespaces")
    assert blocked.status == "blocked" and blocked.violations[0]["kind"] == "other"  # import ctypes, or its dlopen
    numpy_first = run_program("import numpy, ctypes\ndef algorithm():\n    return ctypes.CDLL(None).getpid()\n",
                              "algorithm", [[]], FAST, isolation="namespaces")  # numpy has imported ctypes already
    assert numpy_first.status == "blocked" and numpy_first.violations[0]["event"] == "ctypes.dlopen"


def test_what_the_program_sees():
    r = run_program("""
import os, sys
def algorithm():
    return {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(), "root": sorted(os.listdir("/")),
            "pids": sorted(p for p in os.listdir("/proc") if p.isdigit()), "work": sorted(os.listdir(".")),
            "tmp": os.listdir("/tmp"), "hostname": os.uname().nodename, "path": sys.path,
            "lib": sorted(os.listdir("/opt/lib")),
            "site": os.listdir(sys.path[1] + "/site-packages") if os.path.isdir(sys.path[1] + "/site-packages") else []}
""", "algorithm", [[]], FAST, isolation="namespaces")
    assert r.status == "ok", r.message
    seen = r.outputs[0]
    assert seen["uid"] == 65534 and seen["gid"] == 65534 and seen["cwd"] == "/sandbox"
    assert seen["root"] == sorted(["dev", "etc", "lib", "lib64", "opt", "proc", "sandbox", "tmp", "usr"])
    assert seen["pids"] == ["1", "2"]  # bwrap's init and the program: nothing of the host
    assert set(seen["work"]) <= {"program.py", "input.json", "stdout.txt", "stderr.txt", "violations.jsonl",
                                 "attempts.jsonl"}
    assert seen["tmp"] == [] and seen["hostname"] == "sandbox"
    assert seen["lib"] == sorted(["numpy"] + (["numpy.libs"] if (Path(namespaces.python_layout().numpy).parent
                                                                 / "numpy.libs").is_dir() else []))
    assert seen["site"] == []  # the base installation's own packages are hidden (or there are none)
    assert isolation_status()["uid_outside"] in (0, 65534, os.geteuid())
    assert all(p.startswith(("/opt/python", "/opt/lib")) for p in seen["path"])


def test_reachable_by_others():
    with tempfile.TemporaryDirectory() as tmp:  # not pytest's tmp_path: its parent is private to its user
        root = Path(tmp)
        os.chmod(root, 0o755)
        private, shared = root / "private", root / "shared"
        private.mkdir(mode=0o700)
        shared.mkdir(mode=0o755)
        (private / "f").write_text("x")
        (shared / "f").write_text("x")
        os.chmod(shared / "f", 0o644)
        public = namespaces.reachable_by_others(tempfile.gettempdir())
        assert namespaces.reachable_by_others(str(shared / "f")) == public == namespaces.reachable_by_others(str(shared))
        assert not namespaces.reachable_by_others(str(private / "f")) and not namespaces.reachable_by_others(str(private))
        assert not namespaces.reachable_by_others(str(root / "missing"))


def test_what_it_leaves_in_its_work_dir_is_out_of_reach_of_other_users():
    """Its uid may be root's outside: a setuid file in a work dir it opened up must still be unreachable.
    The work dir is a tmpfs of the namespaces: nothing written there appears on the host at all."""
    source = BYPASS + """
import os, time
def algorithm():
    os.chmod("/sandbox", 0o777)
    with open("/sandbox/evil", "w") as f:
        f.write("#!/bin/sh\\n")
    os.chmod("/sandbox/evil", 0o4755)
    time.sleep(3)
    return oct(os.stat("/sandbox").st_mode)
"""
    found = []

    def watch():
        for _ in range(300):
            hits = list(Path(tempfile.gettempdir()).glob("tenfold-sandbox-*/**/evil"))
            if hits:
                found.extend((str(h), namespaces.reachable_by_others(str(h))) for h in hits)
                return
            threading.Event().wait(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    r = run_program(source, "algorithm", [[]], FAST, isolation="namespaces")
    watcher.join()
    assert r.status == "ok" and r.outputs == ["0o40777"]  # it did open up its own dir
    assert found == [], found


def test_writable_places_are_its_own():
    r = run_program("""
def algorithm():
    for p in ("/sandbox/a.txt", "/tmp/b.txt", "c.txt"):
        with open(p, "w") as f:
            f.write(p)
    return [open(p).read() for p in ("/sandbox/a.txt", "/tmp/b.txt", "c.txt")]
""", "algorithm", [[]], FAST, isolation="namespaces")
    assert r.status == "ok" and r.outputs[0] == ["/sandbox/a.txt", "/tmp/b.txt", "c.txt"]


@pytest.mark.parametrize("source, kind, status", [
    ("def algorithm():\n    try:\n        open('/etc/passwd').read()\n    except OSError:\n        pass\n"
     "    return 1\n", "read outside", "ok"),  # tried, denied by the namespaces (no such file), and went on
    ("import os\ndef algorithm():\n    os.listdir('/home')\n", "read outside", "error"),
    ("import os\ndef algorithm():\n    os.fork()\n", "process start", "blocked"),
    ("import socket\ndef algorithm():\n    pass\n", "network", "blocked"),
    ("def algorithm():\n    open('/usr/lib/x', 'w')\n", "write outside", "blocked"),
    ("def algorithm():\n    return len(bytearray(8 * 1024 ** 3))\n", "resource limit", "memory"),
    ("def algorithm():\n    while True:\n        pass\n", "resource limit", "timeout"),
    (BYPASS + "def algorithm():\n    open('/usr/lib/x', 'w')\n", "write outside", "error"),  # EROFS
    (BYPASS + "import os\ndef algorithm():\n    os.fork()\n", "process start", "error"),  # seccomp: EPERM
    (BYPASS + "import socket\ndef algorithm():\n    socket.create_connection(('127.0.0.1', 9), timeout=1)\n",
     "network", "error"),  # no network: unreachable
])
def test_circumvention_is_counted_at_run_time(source, kind, status):
    if "os.fork" in source and BYPASS in source and "seccomp" not in isolation_status()["isolation"]:
        pytest.fail("no seccomp layer: forks are bounded by RLIMIT_NPROC only (install pyseccomp and libseccomp2)")
    r = run_program(source, "algorithm", [[]], Limits(wall_seconds=4, cpu_seconds=2), isolation="namespaces")
    assert r.status == status, (r.status, r.message, r.attempts)
    denied = r.denied()
    assert denied.get(kind, 0) >= 1 and set(denied) <= set(CIRCUMVENTION_KINDS), denied


def test_benign_numpy_program_scores_the_same_with_and_without_namespaces():
    source = ("import numpy as np\ndef algorithm(a):\n    x = np.asarray(a, dtype=float)\n"
              "    return {'sum': float(x.sum()), 'inv': np.linalg.inv(np.eye(3) * 2).tolist(),"
              " 'r': float(np.random.rand())}\n")
    isolated = run_program(source, "algorithm", [[[1, 2, 3]]], FAST, isolation="namespaces")
    guard = run_program(source, "algorithm", [[[1, 2, 3]]], FAST, isolation="guard")
    assert isolated.status == guard.status == "ok" and isolated.outputs == guard.outputs
    assert isolated.isolation.startswith("namespaces") and guard.isolation == "guard"


def test_services_still_cross_the_boundary():
    calls = []

    def handler(payload):
        calls.append(payload)
        return 0.5

    r = run_program("def algorithm(utility):\n    return utility('x = 1')\n", "algorithm", [[]], FAST,
                    services={"utility": ({"description": "d", "budget": 1}, handler)}, isolation="namespaces")
    assert r.status == "ok" and r.outputs == [0.5] and calls == [{"program": "x = 1"}]


# -- the fallback, said out loud -----------------------------------------------------------------------
@pytest.fixture
def no_namespaces(monkeypatch):
    monkeypatch.setattr(namespaces, "probe", lambda: (None, "bubblewrap (bwrap) is not installed"))
    monkeypatch.delenv("TENFOLD_SANDBOX", raising=False)


def test_fallback_to_the_guard_is_recorded_and_can_be_refused(no_namespaces):
    r = run_program("def algorithm():\n    return 1\n", "algorithm", [[]], FAST)
    assert r.status == "ok" and r.isolation == "guard"
    assert "bwrap" in fallback_warning() and len(fallback_warning().splitlines()) == 1
    with pytest.raises(IsolationRequired, match="bwrap"):
        run_program("def algorithm():\n    return 1\n", "algorithm", [[]], FAST, isolation="namespaces")
    with pytest.raises(IsolationRequired):
        fallback_warning(require=True)


def test_namespaces_are_used_by_default_here():
    """On machines with bubblewrap (CI among them) an ordinary run is isolated; this fails where it is not."""
    status = isolation_status()
    assert status["available"], status["reason"]
    assert fallback_warning() is None
    r = run_program("def algorithm():\n    return 1\n", "algorithm", [[]], FAST)
    assert r.isolation == status["isolation"]


def _cli(args, env_path, stdin=None):
    env = dict(os.environ, PATH=env_path)
    env.pop("TENFOLD_SANDBOX", None)
    return subprocess.run([sys.executable, "-m", "tenfold", *args], input=stdin, capture_output=True, text=True,
                          timeout=300, env=env)


def test_cli_warns_once_without_bubblewrap_and_refuses_with_require_isolation(tmp_path):
    prog = tmp_path / "p.py"
    prog.write_text("def algorithm(samples, labels):\n    return [0] * 10\n")
    no_bwrap = str(tmp_path / "empty-bin")  # a PATH where bwrap cannot be found
    out = _cli(["stop", "utility", "--task", "lpn", str(prog), "--json"], no_bwrap)
    assert out.returncode == 0, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and out.stderr.startswith("warning:") and "bwrap" in out.stderr
    assert json.loads(out.stdout)["isolation"] == "guard"
    refused = _cli(["stop", "utility", "--task", "lpn", str(prog), "--require-isolation"], no_bwrap)
    assert refused.returncode != 0 and len(refused.stderr.strip().splitlines()) == 1
    assert "isolation required" in refused.stderr and refused.stdout == ""
    humaneval = _cli(["analogical", "eval", "--strategy", "zero-shot", "--task", "humaneval", "--n", "1",
                      "--require-isolation"], no_bwrap)
    assert humaneval.returncode != 0 and len(humaneval.stderr.strip().splitlines()) == 1
    assert "isolation required" in humaneval.stderr
    isolated = _cli(["stop", "utility", "--task", "lpn", str(prog), "--json", "--require-isolation"], os.environ["PATH"])
    assert isolated.returncode == 0 and isolated.stderr == "" and json.loads(isolated.stdout)["isolation"].startswith(
        "namespaces")


def test_benchmark_measures_both_isolations_and_hostile_programs():
    from tenfold.prompting.evaluation import passes
    from tenfold.sandbox.benchmark import HOSTILE as BENCH_HOSTILE
    from tenfold.sandbox.benchmark import benchmark

    result = benchmark(runs=2, humaneval=3, passes=passes)
    assert set(result["per_run"]) == {"namespaces", "guard"}
    assert all(r["runs_per_s"] > 0 for r in result["per_run"].values())
    assert result["humaneval"]["passed"] == {"namespaces": 3, "guard": 3, "guard, numpy preloaded": 3}
    assert result["runs_per_s_ratio"] > 0 and result["humaneval_time_ratio"] > 0  # speed itself: see stop-sandbox
    assert result["humaneval_time_vs_today"] > 0
    assert set(result["hostile_hook_off"]) == set(BENCH_HOSTILE)
    assert "ok" not in result["hostile_hook_off"].values(), result["hostile_hook_off"]
