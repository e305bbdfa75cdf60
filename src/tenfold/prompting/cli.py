"""``tenfold analogical eval``: prompting strategies on math and code (Yasunaga et al. 2023)."""
from __future__ import annotations


from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json


def add_commands(sub) -> None:
    from tenfold.argtypes import positive_int, temperature
    from tenfold.prompting.analogical import STRATEGIES
    from tenfold.prompting.backends import add_backend_args
    from tenfold.prompting.evaluation import TASKS

    p = sub.add_parser("analogical", help="analogical prompting vs. zero-/few-shot (CoT) on math and code (eval)")
    verbs = p.add_subparsers(dest="analogical_verb", required=True, metavar="{eval}")
    e = verbs.add_parser("eval", help="accuracy of one strategy on the test split, with a 95%% interval")
    e.add_argument("--strategy", required=True, choices=STRATEGIES)
    e.add_argument("--task", required=True, choices=TASKS)
    e.add_argument("--n", type=int, default=20, help="test problems (default 20)")
    e.add_argument("--k", type=int, default=3, help="exemplars recalled (analogical) or given (few-shot); default 3")
    e.add_argument("--max-tokens", type=positive_int, default=768)
    e.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy")
    e.add_argument("--json", action="store_true", help="print the result (with per-problem rows) as JSON")
    e.add_argument("--require-isolation", action="store_true",
                   help="humaneval: refuse to run model-written code without Linux namespaces (bubblewrap) instead "
                        "of falling back to the in-process guard")
    add_backend_args(e)
    e.set_defaults(func=_eval)


def _eval(args) -> int:
    from rich.progress import Progress

    from tenfold.prompting.backends import backend_from_args
    from tenfold.prompting.evaluation import evaluate

    if args.n < 1 or args.k < 1 or args.max_tokens < 1:
        raise TenfoldError("--n, --k and --max-tokens must be >= 1")
    isolation = None
    if args.task == "humaneval":  # completions are model-written code: check the sandbox before loading a model
        import sys

        from tenfold.sandbox import fallback_warning

        warning = fallback_warning(require=args.require_isolation)
        if warning:
            print(warning, file=sys.stderr)
        isolation = "namespaces" if args.require_isolation else None
    backend = backend_from_args(args)
    with Progress(transient=True) as bar:  # on stderr: --json keeps it
        job = bar.add_task(f"{args.strategy} on {args.task}", total=args.n)
        result = evaluate(backend, args.strategy, args.task, args.n, args.k, args.max_tokens, args.temperature,
                          progress=lambda done, total: bar.update(job, completed=done, total=total),
                          isolation=isolation)
    if args.json:
        print_json(result)
    else:
        lo, hi = result["ci95"]
        print(f"{args.strategy} on {args.task}: accuracy {result['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}, "
              f"n={result['n']}), {result['tokens_per_problem']:.0f} completion tokens per problem"
              + (f"; sandbox: {result['isolation']}" if result.get("isolation") else ""))
    return 0
