"""Attacks found by a review of issue 27, mostly on what the *host* does with what the program leaves behind.

The program cannot read the host's files itself (the namespaces), but the parent reads back from the
program's reach after the run, as the user tenfold runs as (root, here): a symlink there must not make
the parent read a host file into the result, a FIFO must not hang it, JSON nested too deep must not crash
it, the program's writes must not fill the host's disk or memory, its service requests and its answers
must not crash or hang the parent, and a directory tree thousands of levels deep must not break the
cleanup. Most programs try both with the audit hook on and switched off (``BYPASS``: the hook is a
tripwire, not the boundary). Also: ctypes calls after numpy loaded ctypes, API keys in the parent's
environment, the fallback warning's advice, and the static sign for reaching into the harness.
"""
import json
import threading

import pytest

from tenfold.sandbox import Limits, isolation_status, namespaces, run_program

# switches the runner's audit hook off from inside the program (as in test_sandbox_isolation)
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
CONTAINED = {"blocked", "error", "timeout", "memory"}

FAST = Limits(wall_seconds=8, cpu_seconds=3)
SECRET = "tenfold-review-secret-91c2"
# every file name the parent has read back, in the work dir (cwd) and in /opt/io (the runner's files)
NAMES = ("stdout.txt", "stderr.txt", "result.json", "violations.jsonl", "attempts.jsonl")
PLACES = ("", "/opt/io/", "../", "../io/")


def _run_with_deadline(*args, deadline=60, **kwargs):
    """run_program in a thread: a parent that hangs fails the test instead of hanging it."""
    box = {}

    def go():
        try:
            box["result"] = run_program(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            box["raised"] = exc

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(deadline)
    assert not thread.is_alive(), "the parent hung on what the program left behind"
    assert "raised" not in box, f"the parent raised {box.get('raised')!r}"
    return box["result"]


ISOLATIONS = ["namespaces", "guard"]


@pytest.fixture
def secret_file(tmp_path):
    path = tmp_path / "host-secret.txt"
    path.write_text(SECRET * 20)
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_symlinks_left_behind_do_not_make_the_parent_read_host_files(isolation, secret_file):
    source = BYPASS + f"""
import os
def algorithm():
    for place in {PLACES!r}:
        for name in {NAMES!r}:
            try:
                os.unlink(place + name)
            except OSError:
                pass
            try:
                os.symlink({str(secret_file)!r}, place + name)
            except OSError:
                pass
    os._exit(0)
"""
    r = _run_with_deadline(source, "algorithm", [[]], FAST, isolation=isolation)
    text = json.dumps([r.outputs, r.message, r.stdout, r.stderr, r.violations, r.attempts])
    assert SECRET not in text, (r.status, text[:300])
    assert r.status in CONTAINED


@pytest.mark.parametrize("bypass", [False, True], ids=["hook-on", "hook-bypassed"])
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_fifos_left_behind_do_not_hang_the_parent(isolation, bypass):
    source = (BYPASS if bypass else "") + f"""
import os
def algorithm():
    for place in {PLACES!r}:
        for name in {NAMES!r}:
            try:
                os.unlink(place + name)
            except OSError:
                pass
            try:
                os.mkfifo(place + name)
            except OSError:
                pass
    os._exit(0)
"""
    r = _run_with_deadline(source, "algorithm", [[]], FAST, isolation=isolation)
    assert r.status in CONTAINED


@pytest.mark.parametrize("bypass", [False, True], ids=["hook-on", "hook-bypassed"])
@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_json_nested_too_deep_does_not_crash_the_parent(isolation, bypass):
    deep = "[" * 200_000 + "]" * 200_000
    source = (BYPASS if bypass else "") + f"""
import os
def algorithm():
    deep = {deep[:10]!r} * 20_000 + {deep[-10:]!r} * 20_000
    for place in {PLACES!r}:
        for name, text in (("result.json", '{{"status": "ok", "outputs": ' + deep + '}}'),
                           ("violations.jsonl", deep + "\\n"), ("attempts.jsonl", deep + "\\n")):
            try:
                with open(place + name, "w") as f:
                    f.write(text)
            except OSError:
                pass
    os._exit(0)
"""
    r = _run_with_deadline(source, "algorithm", [[]], FAST, isolation=isolation)
    assert r.status in CONTAINED, r.status


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_service_request_nested_too_deep_does_not_crash_the_parent(isolation):
    source = """
import __main__ as m
def algorithm(utility):
    m._requests.write('{"service": "utility", "payload": ' + '[' * 200000 + ']' * 200000 + '}\\n')
    m._requests.flush()
    return m._replies.readline()
"""
    r = _run_with_deadline(source, "algorithm", [[]], FAST, isolation=isolation,
                           services={"utility": ({"description": "d", "budget": 1}, lambda payload: 0.0)})
    assert r.status in ("ok", "error") and "error" in json.dumps(r.outputs), (r.status, r.outputs, r.message)


def test_a_naive_forged_result_does_not_score():
    """Writing ``result.json`` in the work dir and leaving claims success without running anything."""
    for isolation in ISOLATIONS:
        r = _run_with_deadline("""
import os
def algorithm():
    with open("result.json", "w") as f:
        f.write('{"status": "ok", "outputs": [true], "seconds": [0.0]}')
    os._exit(0)
""", "algorithm", [[]], FAST, isolation=isolation)
        assert r.status != "ok" and r.outputs == [], (isolation, r.status, r.outputs)


def test_the_work_dir_cannot_fill_the_hosts_disk():
    """Many files, each under the file-size limit, in the work dir: capped like the private /tmp, in memory."""
    r = _run_with_deadline("""
import os
def algorithm():
    block, written = b"x" * (1 << 20), 0
    try:
        for i in range(24):
            with open(f"f{i}", "wb") as f:
                for _ in range(4):
                    f.write(block)
                    written += len(block)
    except OSError:
        pass
    return written
""", "algorithm", [[]], Limits(wall_seconds=20, cpu_seconds=10), isolation="namespaces")
    assert r.status == "ok", (r.status, r.message)
    assert r.outputs[0] <= namespaces.TMP_BYTES, r.outputs


def test_the_work_dir_starts_empty_and_the_runner_files_are_read_only():
    r = _run_with_deadline(BYPASS + """
import os
def algorithm():
    out = {"work": sorted(os.listdir("."))}
    for name in ("program.py", "input.json"):
        try:
            open("/opt/io/" + name, "a").close()
            out[name] = "writable"
        except OSError as exc:
            out[name] = type(exc).__name__
    return out
""", "algorithm", [[]], FAST, isolation="namespaces")
    assert r.status == "ok", (r.status, r.message)
    assert r.outputs[0]["work"] == [] and "writable" not in r.outputs[0].values(), r.outputs


def test_isolation_is_available_for_these_tests():
    assert isolation_status()["available"], isolation_status()["reason"]


def test_no_writable_place_inside_is_unbounded():
    """/dev (and /dev/shm) were tmpfs mounts without a size: the host's memory, half of it by default, was
    the only limit on what a program (hook switched off) could leave there, outside RLIMIT_AS."""
    r = _run_with_deadline(BYPASS + """
import os
def algorithm():
    block, out = b"x" * (1 << 20), {}
    for place in ("/dev/shm", "/dev", "/tmp", "/sandbox"):
        written = 0
        try:
            for i in range(20):
                with open(f"{place}/f{i}", "wb") as f:
                    for _ in range(4):
                        f.write(block)
                        written += len(block)
        except OSError:
            pass
        out[place] = written
        for i in range(20):
            try:
                os.unlink(f"{place}/f{i}")
            except OSError:
                pass
    with open("/dev/null", "w") as f:
        f.write("still a sink")
    return out
""", "algorithm", [[]], Limits(wall_seconds=30, cpu_seconds=20), isolation="namespaces")
    assert r.status == "ok", (r.status, r.message, r.stderr[-300:])
    written = r.outputs[0]
    assert written["/dev/shm"] == written["/dev"] == 0, written
    assert max(written.values()) <= max(namespaces.TMP_BYTES, namespaces.WORK_BYTES), written


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_ctypes_calls_are_blocked_after_numpy_has_loaded_ctypes(isolation):
    """numpy imports ctypes before the hook is installed, so ``import ctypes`` fires no import event; only
    dlopen/dlsym/cdata were blocked, and memset/memmove/string_at (raw memory, any address) went through.
    Not closed (CPython raises no audit event for it): ``ctypes.cast(address, POINTER(...)).contents`` still
    reads and writes the program's own memory, one more way around the hook; the namespaces are the boundary."""
    for call in ("ctypes.memset(ctypes.create_string_buffer(8), 65, 4)",
                 "ctypes.string_at(id(b'x'), 8)",
                 "ctypes.create_string_buffer(8)"):
        r = _run_with_deadline(f"import numpy, ctypes\ndef algorithm():\n    {call}\n    return 1\n",
                               "algorithm", [[]], FAST, isolation=isolation)
        assert r.status == "blocked" and r.violations[0]["event"].startswith("ctypes."), (call, r.status, r.message)
        assert r.denied().get("other") == 1


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_numpy_still_works_behind_the_ctypes_rule(isolation):
    r = _run_with_deadline("""
import numpy as np
def algorithm():
    a = np.arange(12, dtype=float).reshape(3, 4)
    return [float(np.linalg.norm(a)), a.T.dot(a).sum(), np.random.rand(3).shape[0],
            float(np.linalg.inv(np.eye(3))[1, 1])]
""", "algorithm", [[]], FAST, isolation=isolation)
    assert r.status == "ok", (r.status, r.message, r.violations)


def test_the_fallback_warning_gives_advice_that_fits_the_cause(monkeypatch):
    """'install bubblewrap' was the advice even where it is installed but cannot make namespaces, or where
    TENFOLD_SANDBOX=guard chose the guard."""
    from tenfold.sandbox import fallback_warning

    monkeypatch.delenv("TENFOLD_SANDBOX", raising=False)
    monkeypatch.setattr(namespaces, "probe", lambda: (None, "bwrap: No permissions to create new namespace"))
    broken = fallback_warning()
    assert "install bubblewrap" not in broken and "user namespaces" in broken and len(broken.splitlines()) == 1
    monkeypatch.setattr(namespaces, "probe", lambda: (None, "bubblewrap (bwrap) is not installed"))
    assert "install bubblewrap" in fallback_warning()
    monkeypatch.setenv("TENFOLD_SANDBOX", "guard")
    forced = fallback_warning()
    assert "install bubblewrap" not in forced and "unset TENFOLD_SANDBOX" in forced


@pytest.mark.parametrize("task, answer", [("lpn", "[10 ** 30] * 10"), ("maxcut", "[1e300] * 40"),
                                          ("lpn", "[float('inf')] * 10"), ("parity", "[float('nan')] * 10"),
                                          ("3sat", "[10 ** 400]"), ("strgrid", "{'A': 1}")])
def test_answers_that_overflow_score_zero_instead_of_crashing_the_scorer(task, answer):
    """Scoring happens outside on the program's JSON: an integer too large for int64 (or an infinity) raised
    OverflowError out of the utility, ending the whole STOP run."""
    from tenfold.stop.utilities import get_utility

    utility = get_utility(task)
    args = {"lpn": "samples, labels", "parity": "samples, labels", "3sat": "formula, n_vars",
            "maxcut": "weights", "strgrid": "t, distance"}[task]
    result = utility(f"def {utility.entry}({args}):\n    return {answer}\n", isolation="namespaces")
    assert result.status == "ok" and result.utility == 0.0, (result.status, result.message)


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_api_keys_in_the_parents_environment_are_not_visible(isolation, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-review-leak-1")
    monkeypatch.setenv("TENFOLD_API_KEY", "tf-review-leak-2")
    r = _run_with_deadline("""
import os
def algorithm():
    seen = [repr(dict(os.environ))]
    for path in ("/proc/self/environ", "/proc/1/environ", "/proc/1/cmdline"):
        try:
            with open(path, "rb") as f:
                seen.append(f.read().decode("latin-1"))
        except OSError:
            pass
    return seen
""", "algorithm", [[]], FAST, isolation=isolation)
    text = json.dumps([r.outputs, r.stdout, r.stderr, r.attempts, r.violations])
    assert "review-leak" not in text and r.status in ("ok", "blocked"), (r.status, r.message)


def test_reaching_into_the_harness_is_a_static_sign():
    """The one-line forgery (``import __main__; __main__._finish({...})``) and the frame and globals routes to
    the harness's state are flagged in the program's text; ``if __name__ == "__main__"`` is not."""
    from tenfold.sandbox import circumvention_signals

    sign = "reaches into the harness (__main__, frames, globals)"
    for source in ("import __main__\n__main__._finish({'status': 'ok'})\n",
                   "from __main__ import _finish\n",
                   "import sys\nsys.modules['__main__']._finish({})\n",
                   "import sys\ng = sys._getframe(1).f_globals\n",
                   "g = extract_code.__globals__\n",
                   "import gc\nobjs = gc.get_objects()\n"):
        assert sign in circumvention_signals(source), source
    assert sign not in circumvention_signals("def f():\n    return 1\n\nif __name__ == '__main__':\n    f()\n")


@pytest.mark.parametrize("isolation", ISOLATIONS)
def test_a_program_that_never_reads_its_replies_does_not_hang_the_parent(isolation):
    """Replies go back over a pipe: with 64 KiB of replies unread, a blocking write held the parent past the
    wall-clock limit for as long as the program slept."""
    source = """
import __main__ as m, time
def algorithm(utility):
    m._requests.write('{"service": "nope", "payload": 1}\\n' * 20000)
    m._requests.flush()
    time.sleep(600)
"""
    r = _run_with_deadline(source, "algorithm", [[]], Limits(wall_seconds=5, cpu_seconds=3), isolation=isolation,
                           deadline=40, services={"utility": ({"description": "d", "budget": 1}, lambda p: 0.0)})
    assert r.status == "timeout", (r.status, r.message)


def test_a_work_dir_thousands_of_levels_deep_is_removed_under_the_guard(tmp_path, monkeypatch):
    """Under the guard the work dir is a host directory: a 5000-level tree (made with dir_fd, allowed by the
    hook) made the parent's cleanup (shutil.rmtree, recursive) raise RecursionError and leave it behind."""
    import tempfile
    from pathlib import Path

    # a temporary folder of this test's own: another xdist worker's sandbox runs come and go in the shared /tmp
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    before = set(Path(tempfile.gettempdir()).glob("tenfold-sandbox-*"))
    r = _run_with_deadline("""
import os
def algorithm():
    fd = os.open(".", os.O_RDONLY)
    for i in range(5000):
        os.mkdir("d", dir_fd=fd)
        os.chmod("d", 0o500, dir_fd=fd) if i % 1000 == 999 else None
        fd2 = os.open("d", os.O_RDONLY, dir_fd=fd)
        f = os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd2)
        os.write(f, b"x")
        os.close(f)
        os.close(fd)
        fd = fd2
    return 1
""", "algorithm", [[]], Limits(wall_seconds=30, cpu_seconds=20), isolation="guard")
    assert r.status == "ok", (r.status, r.message, r.violations)
    assert set(Path(tempfile.gettempdir()).glob("tenfold-sandbox-*")) <= before
