"""``tenfold stop utility|seed``: score programs in the sandbox (STOP, Zelikman et al. 2023)."""
from __future__ import annotations

import json
import sys

from tenfold.errors import TenfoldError


def add_commands(sub) -> None:
    from tenfold.stop.utilities import UTILITIES

    p = sub.add_parser("stop", help="STOP: score programs in a sandbox (utility | seed)")
    verbs = p.add_subparsers(dest="stop_verb", required=True, metavar="{utility,seed,describe}")
    u = verbs.add_parser("utility", help="run PROGRAM.py in the sandbox and print its utility and status")
    u.add_argument("program", help="a Python file defining algorithm(...), or - for stdin")
    u.add_argument("--task", required=True, choices=sorted(UTILITIES))
    u.add_argument("--seed", type=int, default=0, help="seed of the random instances (default 0)")
    u.add_argument("--json", action="store_true", help="print utility, status, message, violations, signals")
    u.set_defaults(func=_utility)
    s = verbs.add_parser("seed", help="print a task's seed program")
    s.add_argument("--task", required=True, choices=sorted(UTILITIES))
    s.set_defaults(func=_seed)
    d = verbs.add_parser("describe", help="print a task's description (what a language model is shown)")
    d.add_argument("--task", required=True, choices=sorted(UTILITIES))
    d.set_defaults(func=_describe)


def _utility(args) -> int:
    from tenfold.data.text import read_text
    from tenfold.stop.utilities import get_utility

    source = sys.stdin.read() if args.program == "-" else read_text(args.program)
    if not source.strip():
        raise TenfoldError(f"{args.program}: the program is empty")
    result = get_utility(args.task)(source, seed=args.seed)
    if args.json:
        print(json.dumps({"task": args.task, "utility": result.utility, "status": result.status,
                          "message": result.message, "violations": result.violations, "signals": result.signals,
                          "seconds": round(result.seconds, 3)}))
    else:
        line = f"{args.task}: utility {result.utility:.3f} ({result.status}"
        line += f": {result.message})" if result.message else ")"
        print(line)
        for v in result.violations:
            print(f"  violation: {v['event']} {v.get('detail', '')}")
        if result.signals:
            print("  circumvention signs in the text: " + ", ".join(result.signals))
    return 0


def _seed(args) -> int:
    from tenfold.stop.utilities import seed_program

    print(seed_program(args.task), end="")
    return 0


def _describe(args) -> int:
    from tenfold.stop.utilities import get_utility

    print(get_utility(args.task).description)
    return 0
