"""STOP: the sandbox contains hostile programs; every utility tells good programs from bad ones."""
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tenfold.stop import Limits, circumvention_signals, get_utility, run_program, seed_program

sys.path.insert(0, str(Path(__file__).parent))
import good_programs as good  # noqa: E402

FAST = Limits(wall_seconds=6, cpu_seconds=3)


def _leftovers() -> set:
    return {p.name for p in Path(tempfile.gettempdir()).glob("tenfold-sandbox-*")}


@pytest.fixture
def own_tempdir(tmp_path, monkeypatch):
    """A temporary folder of this test's own: another xdist worker's sandbox runs come and go in the shared /tmp
    (CI saw their tenfold-sandbox-* folders as this test's leftovers)."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))


def test_a_plain_program_runs_and_returns_data(own_tempdir):
    before = _leftovers()
    r = run_program("import numpy as np\ndef algorithm(a, b):\n    return np.array([a, b]).sum()\n",
                    "algorithm", [[1, 2], [3, 4]], FAST)
    assert r.status == "ok" and r.outputs == [3, 7] and len(r.seconds) == 2
    assert _leftovers() == before  # the work dir is gone


HOSTILE = {
    "infinite loop": ("def algorithm(x):\n    while True:\n        pass\n", "timeout", None),
    "fork bomb": ("import os\ndef algorithm(x):\n    while True:\n        os.fork()\n", "blocked", "os.fork"),
    "10 GB allocation": ("def algorithm(x):\n    return len(bytearray(10 * 1024 ** 3))\n", "memory", None),
    "10 GB numpy array": ("import numpy as np\ndef algorithm(x):\n    return float(np.ones(10 ** 10).sum())\n",
                          "memory", None),
    # the target is under the host's /tmp: inside the namespaces /tmp is the program's own (no such file there);
    # under the guard alone the hook blocks it
    "write outside the work dir": ("def algorithm(x):\n    open({target!r}, 'w').write('x')\n", "contained", None),
    "delete outside the work dir": ("import os\ndef algorithm(x):\n    os.remove({target!r})\n", "contained", None),
    "open a socket": ("import socket\ndef algorithm(x):\n    socket.create_connection(('127.0.0.1', 80))\n",
                      "blocked", "import"),
    "shell out": ("import os\ndef algorithm(x):\n    os.system('touch ' + {target!r})\n", "blocked", "os.system"),
    "subprocess": ("def algorithm(x):\n    import subprocess\n    subprocess.run(['true'])\n", "blocked", "import"),
    "ctypes": ("def algorithm(x):\n    import ctypes\n    return ctypes.CDLL(None).getpid()\n", "blocked", None),
    "raise its limits": ("import resource\ndef algorithm(x):\n    resource.setrlimit(resource.RLIMIT_CPU, (100, 100))\n",
                         "blocked", "resource.setrlimit"),
    "flood stdout": ("def algorithm(x):\n    print('x' * 10 ** 8)\n", "error", None),
}


@pytest.mark.parametrize("isolation", ["auto", "guard"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_programs_are_contained_and_leave_no_trace(name, isolation, tmp_path, own_tempdir):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    source, status, event = HOSTILE[name]
    if status == "contained":
        status = "blocked" if isolation == "guard" else "error"
    before = _leftovers()
    r = run_program(source.format(target=str(target)), "algorithm", [[1]], FAST, isolation=isolation)
    assert r.status == status, (r.status, r.message, r.stderr[-300:])
    if event:
        assert r.violations and r.violations[0]["event"] == event
    assert target.read_text() == "keep me"  # untouched
    assert _leftovers() == before
    assert len(r.stdout) <= FAST.output_bytes


def test_environment_secrets_are_not_visible(monkeypatch):
    monkeypatch.setenv("TENFOLD_TEST_SECRET", "hunter2")
    r = run_program("import os\ndef algorithm():\n    return dict(os.environ)\n", "algorithm", [[]], FAST)
    assert r.status == "ok"
    env = r.outputs[0]
    assert "TENFOLD_TEST_SECRET" not in env and "hunter2" not in json.dumps(env)
    assert set(env) <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                        "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "LC_CTYPE", "PWD",
                        "LD_LIBRARY_PATH"}  # the last two inside the namespaces (bwrap's PWD; libpython at /opt/python/lib)


def test_program_errors_are_reported_not_raised():
    assert run_program("def algorithm(:\n", "algorithm", [[]], FAST).status == "error"
    assert "no function" in run_program("x = 1\n", "algorithm", [[]], FAST).message
    r = run_program("def algorithm():\n    raise ValueError('nope')\n", "algorithm", [[]], FAST)
    assert r.status == "error" and "ValueError: nope" in r.message
    assert run_program("def algorithm():\n    return object()\n", "algorithm", [[]], FAST).status == "error"
    assert run_program("", "algorithm", [[]], FAST).status == "error"
    # writing inside its own work dir is allowed
    r = run_program("def algorithm():\n    open('a.txt', 'w').write('hi')\n    return open('a.txt').read()\n",
                    "algorithm", [[]], FAST)
    assert r.status == "ok" and r.outputs == ["hi"]


@pytest.mark.parametrize("task, good_source, good_floor, bad_ceiling", [
    ("lpn", good.LPN, 0.95, 0.75),
    ("parity", good.LPN, 0.99, 0.75),
    ("3sat", good.THREE_SAT, 0.99, 0.2),
    ("maxcut", good.MAXCUT, 0.6, 0.52),
    ("strgrid", good.STRGRID, 0.95, 0.6),
])
def test_each_utility_scores_good_and_bad_programs(task, good_source, good_floor, bad_ceiling):
    utility = get_utility(task)
    assert utility(good_source, seed=3).utility >= good_floor
    assert utility(seed_program(task), seed=3).utility <= bad_ceiling
    assert utility("def algorithm(*args):\n    return 'nonsense'\n", seed=3).utility == 0.0
    hostile = utility("import os\ndef algorithm(*args):\n    os.system('true')\n", seed=3)
    assert hostile.utility == 0.0 and hostile.status == "blocked" and "imports os" in hostile.signals


def test_a_random_program_scores_the_same_twice():
    lpn = get_utility("lpn")
    assert lpn(seed_program("lpn"), seed=4).utility == lpn(seed_program("lpn"), seed=4).utility


def test_lpn_brute_force_is_about_one_and_constant_guess_about_half():
    lpn = get_utility("lpn")
    zeros = lpn("def algorithm(samples, labels):\n    return [0] * 10\n", seed=5).utility
    assert 0.3 <= zeros <= 0.7  # the all-zero secret predicts parity 0: right about half the time
    assert lpn(good.LPN, seed=5).utility >= 0.95


def test_circumvention_signals():
    assert circumvention_signals("use_sandbox = False\nimport os\n") == ["disables the sandbox flag", "imports os"]
    assert "imports ctypes" in circumvention_signals("from ctypes import CDLL")
    assert circumvention_signals("def algorithm(x):\n    return x\n") == []


def _cli(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "tenfold", "stop", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_cli_utility_json(tmp_path):
    prog = tmp_path / "lpn.py"
    prog.write_text(good.LPN)
    out = _cli("utility", "--task", "lpn", str(prog), "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["status"] == "ok" and data["utility"] >= 0.95 and data["task"] == "lpn"
    hostile = _cli("utility", "--task", "lpn", "-", "--json", stdin="import os\ndef algorithm(a, b):\n    os.fork()\n")
    data = json.loads(hostile.stdout)
    assert data["status"] == "blocked" and data["utility"] == 0.0 and data["violations"][0]["event"] == "os.fork"
    assert _cli("seed", "--task", "maxcut").stdout.startswith("import random")
    assert "Max-Cut" in _cli("describe", "--task", "maxcut").stdout


@pytest.mark.parametrize("args, message", [
    (["utility", "--task", "lpn", "/nonexistent.py"], "not found"),
    (["utility", "--task", "nope", "x.py"], "invalid choice"),
])
def test_cli_bad_input_is_one_line(args, message):
    out = _cli(*args)
    assert out.returncode != 0 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_sandbox_does_not_inherit_the_callers_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = run_program("import os\ndef algorithm():\n    return os.getcwd()\n", "algorithm", [[]], FAST)
    assert r.status == "ok" and not r.outputs[0].startswith(str(tmp_path))
    assert r.outputs[0] == "/sandbox" if r.isolation.startswith("namespaces") else "tenfold-sandbox-" in r.outputs[0]
    assert os.getcwd() == str(tmp_path)


@pytest.mark.slow
def test_cli_improve_out_is_a_folder(tmp_path):
    """`stop improve --out` is a folder like every other --out: archive.json plus each improver's source; a file
    path is refused with one line before any work."""
    afile = tmp_path / "archive.json"
    afile.write_text("{}")
    refused = _cli("improve", "--iterations", "0", "--out", str(afile))
    assert refused.returncode != 0 and afile.read_text() == "{}"
    assert refused.stderr.strip().splitlines() == [f"tenfold stop improve: error: argument --out: {afile} is an existing "
                                                   "file; give a directory (see --help)"]  # at parse time, as every --out
    out = tmp_path / "run"
    ran = subprocess.run([sys.executable, "-m", "tenfold", "stop", "improve", "--task", "lpn", "--iterations", "0",
                          "--tests", "1", "--lm-calls", "1", "--samples", "1", "--utility-calls", "1",
                          "--max-tokens", "8", "--out", str(out), "--json"], capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stderr
    saved = json.loads((out / "archive.json").read_text())
    assert saved["task"] == "lpn" and [a["iteration"] for a in saved["archive"]] == [0]
    assert (out / "improver-0.py").read_text() == saved["archive"][0]["source"]
    assert json.loads(ran.stdout)["meta_utility"] == saved["meta_utility"]
