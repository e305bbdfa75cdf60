"""The ``tenfold`` command line: one verb per job; paper packages add their own verbs.

Errors are one line on stderr with a non-zero exit code; ``--json`` gives machine-readable output.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from tenfold.errors import TenfoldError  # noqa: E402

# Each paper package's cli module exposes add_commands(subparsers).
PAPER_CLIS = ["tenfold.streaming.cli", "tenfold.serve.cli", "tenfold.probes.cli", "tenfold.retrieval.cli", "tenfold.ndp.cli",
              "tenfold.stop.cli", "tenfold.prompting.cli", "tenfold.pause.cli", "tenfold.radit.cli",
              "tenfold.vision.cli", "tenfold.kosmos_g.cli", "tenfold.lmm.cli"]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus the exit code 2), not a usage dump."""

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _cmd_generate(args) -> int:
    import torch
    from transformers import TextStreamer

    from tenfold.models import chat_ids, load_lm

    if not args.prompt.strip():
        raise TenfoldError("the prompt is empty")
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    if args.backend == "openai" or args.base_url:
        from tenfold.prompting.backends import backend_from_args

        reply = backend_from_args(args).complete(messages, temperature=args.temperature,
                                                 max_tokens=args.max_new_tokens)[0]
        print(reply)
        return 0
    model, tok = load_lm(args.model)
    ids = chat_ids(tok, messages)
    streamer = TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    sample = args.temperature > 0
    torch.manual_seed(args.seed)
    with torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                       do_sample=sample, temperature=args.temperature if sample else None,
                       top_p=args.top_p if sample else None, top_k=None, streamer=streamer,
                       pad_token_id=tok.pad_token_id)
    return 0


def _cmd_models(args) -> int:
    from tenfold.models import available

    rows = available()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        state = "cached" if r["cached"] else "not converted yet (first load converts it)"
        print(f"{r['name']:<24} {r['kind']:<28} {state}\n    source: {r['source']}\n    cache:  {r['cache']}")
    print("Any local model directory or Hugging Face id in your local cache works too (--model NAME).")
    return 0


def _cmd_data_prepare(args) -> int:
    from tenfold.data import prepare_all
    from tenfold.models import convert_bundled

    where = prepare_all()
    if not args.skip_model:
        where["smollm2-135m-instruct"] = str(convert_bundled())
    if args.json:
        print(json.dumps(where))
    else:
        for name, path in where.items():
            print(f"{name}: {path}")
    return 0


def _cmd_reproduce(args) -> int:
    from tenfold.report import run_experiments, select

    experiments = select(args.names)
    records = run_experiments(experiments, args.profile, args.out, show_progress=not args.json)
    index = os.path.abspath(os.path.join(args.out, "index.html"))
    if args.json:
        print(json.dumps({"report": index, "results": [{k: r.get(k) for k in ("name", "verdict", "runtime_s")} for r in records]}))
    else:
        print(f"Report: {index}")
    return 1 if any(r["status"] == "failed" for r in records) and args.strict else 0


def _cmd_report(args) -> int:
    from tenfold.report import build_report

    print(f"Report: {os.path.abspath(build_report(args.dir))}")
    return 0


def build_parser() -> Parser:
    parser = Parser(prog="tenfold", description="Ten systems from one week of ML papers (2023-10-02..08), runnable offline.")
    parser.add_argument("--version", action="version", version=f"tenfold {__import__('tenfold').__version__}")
    sub = parser.add_subparsers(dest="command", metavar="VERB", parser_class=Parser)

    p = sub.add_parser("generate", help="chat-template generation with a model, printed as it comes")
    p.add_argument("prompt")
    from tenfold.prompting.backends import add_backend_args

    add_backend_args(p)
    p.add_argument("--system", default=None, help="optional system message")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser("models", help="list the models tenfold can use offline and whether they are cached")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_models)

    p = sub.add_parser("data", help="corpora: 'tenfold data prepare' fetches and caches every one")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", parser_class=Parser, required=True)
    dp = dsub.add_parser("prepare", help="fetch and cache every corpus and convert the bundled model")
    dp.add_argument("--skip-model", action="store_true", help="do not convert the bundled model")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(func=_cmd_data_prepare)

    p = sub.add_parser("reproduce", help="run the papers' experiments and write the HTML report")
    p.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--out", default="report", help="report directory (default: ./report)")
    p.add_argument("--strict", action="store_true", help="exit non-zero when an experiment fails")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("report", help="rebuild DIR/index.html from DIR/results/*.json")
    p.add_argument("dir", nargs="?", default="report")
    p.set_defaults(func=_cmd_report)

    for module in PAPER_CLIS:
        importlib.import_module(module).add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return args.func(args) or 0
    except TenfoldError as exc:
        print(f"tenfold: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tenfold: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
