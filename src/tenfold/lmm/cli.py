"""``tenfold lmm suite|run``: make a probe suite from the visual world; run a suite against a vision-language model."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from tenfold.argtypes import directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import progress_bar


def add_commands(sub) -> None:
    from tenfold.argtypes import DEVICE_HELP, add_device_arg, image_size, positive_float, positive_int
    from tenfold.lmm.prompts import TECHNIQUES
    from tenfold.lmm.referring import POINTERS
    from tenfold.lmm.suite import CATEGORIES

    p = sub.add_parser("lmm", help="probe vision-language models GPT-4V-style: visual referring prompts, suites, "
                                   "runs (suite | run)")
    verbs = p.add_subparsers(dest="lmm_verb", required=True, metavar="{suite,run}")

    s = verbs.add_parser("suite", help="write a probe suite with exact answers, generated from the visual world")
    s.add_argument("--out", type=directory, required=True, help="directory for suite.json and images/")
    s.add_argument("--n", type=int, default=10, help="samples per category (referring: scenes, one per pointer)")
    s.add_argument("--size", type=image_size, default=128, help="image side in pixels")
    s.add_argument("--seed", type=random_seed, default=0)
    s.add_argument("--force", action="store_true", help="replace the suite already in --out")
    s.add_argument("--category", action="append", choices=CATEGORIES, help="only these categories (repeat)")
    s.add_argument("--pointer", action="append", choices=POINTERS, help="only these pointer types (repeat)")
    s.add_argument("--json", action="store_true", help="print the suite file, sample counts (by category and pointer) "
                                                       "and settings as JSON")
    s.set_defaults(func=_suite)

    r = verbs.add_parser("run", help="ask every sample of a suite and score the answers")
    r.add_argument("suite", help="a suite file (.json / .yaml)")
    r.add_argument("--out", type=directory, required=True, help="run directory: answers.jsonl (the resumable cache), "
                                                "results.jsonl, summary.json, report.html")
    r.add_argument("--backend", choices=["local", "openai"], default="local")
    r.add_argument("--vlm", default=None, help="for --backend local: a VLM directory (`tenfold vision train-vlm`)")
    r.add_argument("--base-url", default=None, help="for --backend openai, e.g. http://127.0.0.1:8000/v1")
    r.add_argument("--model", default=None, help="for --backend openai: the model name")
    add_device_arg(r, help=DEVICE_HELP + " (--backend local's VLM and a local judge; a server chooses its own)")
    r.add_argument("--technique", action="append", choices=TECHNIQUES, default=[],
                   help="prompting technique(s) from the paper (repeat)")
    r.add_argument("--max-tokens", type=positive_int, default=48)
    r.add_argument("--concurrency", type=positive_int, default=4, help="requests in flight (openai backend)")
    r.add_argument("--rate", type=positive_float, default=None, help="at most this many requests per second")
    r.add_argument("--retries", type=int, default=2,
                   help="openai backend: retries of a request that failed for a passing reason (time-out, connection, "
                        "408/409/429/5xx), by the openai SDK with exponential back-off and Retry-After")
    r.add_argument("--timeout", type=positive_float, default=60.0, help="seconds per request (openai backend)")
    r.add_argument("--judge-base-url", default=None, help="OpenAI-compatible server for samples scored by a judge")
    r.add_argument("--judge-model", default=None, help="judge model name ('local': the bundled LM in-process)")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=_run)


def _suite(args) -> int:
    from tenfold.lmm.referring import POINTERS
    from tenfold.lmm.suite import CATEGORIES, load_suite
    from tenfold.lmm.world_suite import world_suite

    path = world_suite(args.out, args.n, args.size, args.seed, args.category or CATEGORIES, args.pointer or POINTERS,
                       force=args.force)
    suite = load_suite(path)
    if args.json:
        from collections import Counter

        print_json({"suite": str(Path(path).resolve()), "name": suite.name, "samples": len(suite.samples),
                    "by_category": dict(sorted(Counter(s.category for s in suite.samples).items())),
                    "by_pointer": dict(sorted(Counter(s.pointer for s in suite.samples if s.pointer).items())),
                    "n": args.n, "size": args.size, "seed": args.seed})
    else:
        print(f"{len(suite.samples)} samples -> {path}")
    return 0


def _judge(args):
    if not args.judge_model and not args.judge_base_url:
        return None
    if args.judge_base_url:
        from tenfold.prompting.backends import OpenAICompatible

        backend = OpenAICompatible(args.judge_base_url, args.judge_model or "judge")
    elif args.judge_model == "local":
        from tenfold.prompting.backends import LocalLM

        backend = LocalLM(device=args.device)
    else:
        raise TenfoldError("--judge-model needs --judge-base-url (or use --judge-model local)")
    return lambda messages: backend.complete(messages, max_tokens=4)[0]


def backend_from_args(args):
    from tenfold.lmm.backends import LocalVLM, OpenAIVision

    if args.backend == "openai":
        if args.vlm:
            raise TenfoldError("--vlm is for --backend local")
        if not args.model:
            raise TenfoldError("--backend openai needs --model (the served model's name)")
        return OpenAIVision(args.base_url, args.model, timeout=args.timeout, max_retries=args.retries)
    if args.base_url:
        raise TenfoldError("--base-url is only used with --backend openai")
    if not args.vlm:
        raise TenfoldError("--backend local needs --vlm DIR (train one with `tenfold vision train-vlm`)")
    from tenfold.vision.vlm import VisionLanguageModel

    return LocalVLM(VisionLanguageModel.load(args.vlm, device=args.device), name=f"local:{Path(args.vlm).resolve()}")


def _run(args) -> int:
    from tenfold.lmm.gallery import summary, write_gallery
    from tenfold.lmm.runner import run_suite, write_results
    from tenfold.lmm.suite import load_suite, suite_file

    suite_path = suite_file(args.suite)
    suite = load_suite(suite_path)
    judge = _judge(args)
    if judge is None and any(s.scoring == "judge" for s in suite.samples):
        raise TenfoldError("this suite has samples scored by a judge: give --judge-base-url/--judge-model")
    backend = backend_from_args(args)
    out = Path(args.out)
    with progress_bar("probing", fields=("info",)) as bar:  # on stderr: --json keeps it
        job = bar.add_task("run", total=len(suite.samples), info=backend.name)
        results = run_suite(suite, suite_path.parent, backend, out, args.technique, args.max_tokens,
                            args.concurrency, args.rate, judge,
                            progress=lambda i, n: bar.update(job, completed=i))
    write_results(results, out)
    s = summary(results)
    (out / "summary.json").write_text(json.dumps(s, indent=1))
    page = write_gallery(suite, suite_path.parent, results, out / "report.html",
                         f"{suite.name} on {backend.name}")
    if args.json:
        print_json(s)
    else:
        print(f"{s['samples']} samples: accuracy {s['accuracy']:.2f}, {s['errors']} errors -> {page}")
        for group in ("by category", "by pointer"):
            if s[group]:
                print(f"  {group}: " + ", ".join(f"{k} {v['accuracy']:.2f}" for k, v in s[group].items()))
    if s["errors"]:
        first = next(r.error for r in results if r.error)
        print(f"tenfold: error: {s['errors']} of {s['samples']} requests failed (first: {first}); a rerun into "
              f"{out} asks only those again", file=sys.stderr)
        return 1
    return 0
