"""``tenfold stop utility|seed``: score programs in the sandbox (STOP, Zelikman et al. 2023)."""
from __future__ import annotations

import json
import sys

from tenfold.argtypes import directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json


def add_commands(sub) -> None:
    from tenfold.stop.utilities import UTILITIES

    from tenfold.prompting.backends import add_backend_args

    p = sub.add_parser("stop", help="STOP, the self-taught optimizer: sandboxed utilities and self-improvement")
    verbs = p.add_subparsers(dest="stop_verb", required=True, metavar="{utility,improve,seed,describe,sandbox-bench}")
    u = verbs.add_parser("utility", help="run PROGRAM.py in the sandbox and print its utility and status")
    u.add_argument("program", help="a Python file defining algorithm(...), or - for stdin")
    u.add_argument("--task", required=True, choices=sorted(UTILITIES))
    u.add_argument("--seed", type=random_seed, default=0, help="seed of the random instances (default 0)")
    u.add_argument("--json", action="store_true", help="print utility, status, message, violations, signals")
    _isolation_arg(u)
    u.set_defaults(func=_utility)
    i = verbs.add_parser("improve", help="self-improve the seed improver for N iterations (meta-utility on --task)")
    i.add_argument("--task", default="lpn", choices=sorted(UTILITIES), help="meta-utility task (default lpn)")
    i.add_argument("--iterations", type=int, default=1)
    i.add_argument("--tests", type=int, default=3, help="seed-program improvements averaged per meta-utility")
    i.add_argument("--lm-calls", type=int, default=4, help="language-model calls per improver run (paper: 4)")
    i.add_argument("--samples", type=int, default=6, help="responses per call (paper: 6)")
    i.add_argument("--utility-calls", type=int, default=25, help="utility calls per improver run (paper: 25)")
    i.add_argument("--max-tokens", type=int, default=512)
    i.add_argument("--seed", type=random_seed, default=0)
    i.add_argument("--out", type=directory, default=None, help="a folder for the archive: archive.json (every improver with its "
                   "meta-utility and the run's ledger) and improver-<iteration>.py (each improver's source)")
    i.add_argument("--json", action="store_true")
    _isolation_arg(i)
    add_backend_args(i)
    i.set_defaults(func=_improve)
    s = verbs.add_parser("seed", help="print a task's seed program")
    s.add_argument("--task", required=True, choices=sorted(UTILITIES))
    s.add_argument("--json", action="store_true", help="print task and program (the source) as JSON")
    s.set_defaults(func=_seed)
    d = verbs.add_parser("describe", help="print a task's description (what a language model is shown)")
    d.add_argument("--task", required=True, choices=sorted(UTILITIES))
    d.add_argument("--json", action="store_true", help="print task and description as JSON")
    d.set_defaults(func=_describe)
    b = verbs.add_parser("sandbox-bench", help="runs per second and HumanEval time with and without namespaces; "
                                               "hostile programs with the audit hook off")
    b.add_argument("--runs", type=int, default=20, help="runs of a small numpy program per isolation (default 20)")
    b.add_argument("--humaneval", type=int, default=164, help="canonical HumanEval solutions to run (default all 164)")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_sandbox_bench)


def _isolation_arg(parser) -> None:
    parser.add_argument("--require-isolation", action="store_true",
                        help="refuse to run model-written code without Linux namespaces (bubblewrap) instead of "
                             "falling back to the in-process guard")


def isolation_for(args) -> str | None:
    """Check the sandbox before any work: one warning line on stderr when only the guard is available;
    an error (:class:`tenfold.sandbox.IsolationRequired`) instead with ``--require-isolation``.
    Returns the ``isolation`` argument for the sandbox."""
    from tenfold.sandbox import fallback_warning

    warning = fallback_warning(require=args.require_isolation)
    if warning:
        print(warning, file=sys.stderr)
    return "namespaces" if args.require_isolation else None


def _utility(args) -> int:
    from tenfold.data.text import read_text
    from tenfold.stop.utilities import get_utility

    isolation = isolation_for(args)
    source = sys.stdin.read() if args.program == "-" else read_text(args.program)
    if not source.strip():
        raise TenfoldError(f"{args.program}: the program is empty")
    result = get_utility(args.task)(source, seed=args.seed, isolation=isolation)
    if args.json:
        print_json({"task": args.task, "utility": result.utility, "status": result.status,
                          "message": result.message, "violations": result.violations, "signals": result.signals,
                          "denied": result.denied, "isolation": result.isolation,
                          "seconds": round(result.seconds, 3)})
    else:
        line = f"{args.task}: utility {result.utility:.3f} ({result.status}"
        line += f": {result.message})" if result.message else ")"
        print(line)
        for v in result.violations:
            print(f"  violation: {v['event']} {v.get('detail', '')}")
        if result.denied:
            print("  denied at run time: " + ", ".join(f"{k} x{n}" for k, n in result.denied.items()))
        print(f"  isolation: {result.isolation}")
        if result.signals:
            print("  circumvention signs in the text: " + ", ".join(result.signals))
    return 0


def _sandbox_bench(args) -> int:
    from tenfold.prompting.evaluation import passes
    from tenfold.sandbox import fallback_warning
    from tenfold.sandbox.benchmark import benchmark

    if args.runs < 1 or not 1 <= args.humaneval <= 164:
        raise TenfoldError("--runs must be >= 1 and --humaneval between 1 and 164")
    warning = fallback_warning()
    if warning:
        print(warning, file=sys.stderr)
    result = benchmark(args.runs, args.humaneval, passes=passes)
    if args.json:
        print_json(result)
        return 0
    he = result["humaneval"]
    for iso, r in result["per_run"].items():
        print(f"{iso:<10} {r['runs_per_s']:6.1f} runs/s ({r['ms_per_run']:.0f} ms per run) of a small numpy program")
    for iso, seconds in he["seconds"].items():
        print(f"HumanEval canonical under {iso}: {he['passed'][iso]}/{he['problems']} in {seconds:.1f} s")
    if "humaneval_time_ratio" in result:
        print(f"namespaces ({result['isolation']}) cost {result['startup_overhead_ms']:+.0f} ms per run; HumanEval time "
              f"{result['humaneval_time_vs_today']:.2f}x the sandbox's before namespaces, "
              f"{result['humaneval_time_ratio']:.2f}x the guard's now")
        print("hostile programs with the audit hook off: " + ", ".join(
            f"{name} -> {status}" for name, status in result["hostile_hook_off"].items()))
    return 0


def _seed(args) -> int:
    from tenfold.stop.utilities import seed_program

    source = seed_program(args.task)
    if args.json:
        print_json({"task": args.task, "program": source})
    else:
        print(source, end="")
    return 0


def _describe(args) -> int:
    from tenfold.stop.utilities import get_utility

    description = get_utility(args.task).description
    if args.json:
        print_json({"task": args.task, "description": description})
    else:
        print(description)
    return 0


def _improve(args) -> int:
    from pathlib import Path

    from rich.progress import Progress

    from tenfold.prompting.backends import backend_from_args
    from tenfold.stop.improver import STOP, Budget

    for name in ("iterations", "tests", "lm_calls", "samples", "utility_calls", "max_tokens"):
        if getattr(args, name) < (0 if name == "iterations" else 1):
            raise TenfoldError(f"--{name.replace('_', '-')} must be >= {0 if name == 'iterations' else 1}")
    out = Path(args.out) if args.out else None
    if out is not None and out.exists() and not out.is_dir():
        raise TenfoldError(f"--out must be a folder (as every tenfold --out); {out} is a file")
    isolation = isolation_for(args)
    budget = Budget(lm_calls=args.lm_calls, samples=args.samples, utility_calls=args.utility_calls,
                    max_tokens=args.max_tokens)
    stop = STOP(backend_from_args(args), budget, seed=args.seed, isolation=isolation)
    with Progress(transient=True) as bar:  # on stderr (tenfold.cli), so --json keeps it
        job = bar.add_task("self-improvement", total=args.iterations + 1)
        archive = stop.self_improve(args.iterations, args.task, args.tests,
                                    progress=lambda t, n, mu: bar.update(job, completed=t + 1,
                                                                         description=f"iteration {t}: meta-utility {mu:.3f}"))
    ledger = stop.ledger
    if ledger.backend_errors and not ledger.lm_samples:  # not one answer: a broken backend, not a result
        raise TenfoldError(f"every language-model call failed ({len(ledger.backend_errors)}): "
                           f"{ledger.backend_errors[0]}")
    report = {"task": args.task, "meta_utility": [a["meta_utility"] for a in archive],
              "statuses": ledger.statuses, "blocked_events": ledger.blocked_events, "signals": ledger.signals,
              "lm_calls": ledger.lm_calls, "lm_samples": ledger.lm_samples,
              "backend_errors": len(ledger.backend_errors), "utility_calls": ledger.utility_calls,
              "sandbox_runs": ledger.sandbox_runs, "programs_seen": ledger.programs_seen,
              "denied": ledger.denied, "isolation": ledger.isolation,
              "sandbox_by_iteration": [a["sandbox"] for a in archive]}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "archive.json").write_text(json.dumps({**report, "archive": archive}, indent=1))
        for a in archive:
            (out / f"improver-{a['iteration']}.py").write_text(a["source"])
    if args.json:
        print_json(report)
    else:
        for a in archive:
            box = a["sandbox"]
            print(f"iteration {a['iteration']}: meta-utility {a['meta_utility']:.3f} ({a['status']}); "
                  f"{box['sandbox_runs']} sandbox runs, denied {box['denied'] or 'nothing'}, sandbox flag disabled in "
                  f"{box['sandbox_flag_disabled']} of {box['programs_seen']} model-written programs")
        print(f"{ledger.lm_samples} LM samples in {ledger.lm_calls} calls, {ledger.utility_calls} utility calls, "
              f"{ledger.sandbox_runs} sandbox runs {ledger.statuses}; blocked {ledger.blocked_events or 'none'}; "
              f"circumvention signs {ledger.signals or 'none'}; isolation {ledger.isolation}")
    return 0
