"""CLI verbs for StreamingLLM: ``tenfold stream-ppl`` and ``tenfold chat``."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.models.decode import DECODE_DTYPE_HELP, DECODE_DTYPES, DTYPES, load_for_decoding
from tenfold.streaming.config import SinkConfig


def add_commands(sub) -> None:
    from tenfold.argtypes import (add_device_arg, non_negative_int, penalty_factor, plot_file, positive_int,
                                  probability, temperature, unit_interval)

    p = sub.add_parser("stream-ppl", help="exact streaming perplexity: dense / window / recompute / sink (StreamingLLM)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="a UTF-8 text file to stream")
    src.add_argument("--book", help="an Austen novel (e.g. emma, prideprejudice) or 'all'")
    p.add_argument("--tokens", type=int, default=2000, help="tokens to stream (default 2000)")
    p.add_argument("--method", default="sink", choices=["dense", "window", "recompute", "sink"])
    SinkConfig.add_args(p, prefill=False)  # one token per step; window / recompute use the same size, sinks + window
    p.add_argument("--model", default=None, help="a local model folder or a cached Hub id (default: the bundled "
                                                 "SmolLM2-135M-Instruct)")
    p.add_argument("--dtype", default="auto", choices=("auto", *DTYPES),
                   help="weights and activations (default auto: float32 on the CPU, exact; bfloat16 on a GPU); int4: "
                        "int4 linear weights, the rest float32 (CPU only)")
    add_device_arg(p)
    p.add_argument("--blocked", action="store_true",
                   help="window/sink: compute the same numbers as one token per step, 256 tokens per forward pass "
                        "(far faster; tokens/s then measures evaluation, not decoding)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=plot_file, default=None, metavar="FILE",
                   help="write a figure of log-perplexity along the stream (.png, .pdf, .svg or .jpg)")
    p.set_defaults(func=_stream_ppl)

    p = sub.add_parser("chat", help="multi-round chat that never runs out of context (sink cache); /reset, /stats, /quit")
    p.add_argument("--model", default=None, help="a local model folder or a cached Hub id (default: the bundled "
                                                 "SmolLM2-135M-Instruct)")
    SinkConfig.add_args(p)
    p.add_argument("--system", default=None)
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--temperature", type=temperature, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=probability, default=0.9, help="nucleus sampling mass, in (0, 1] (temperature > 0)")
    p.add_argument("--top-k", type=non_negative_int, default=0, help="sample among the k likeliest tokens; 0 = off")
    p.add_argument("--min-p", type=unit_interval, default=0.0,
                   help="drop tokens below this share of the likeliest one's probability; 0 = off")
    p.add_argument("--repetition-penalty", type=penalty_factor, default=1.0,
                   help="> 1 discourages repeating the reply's own tokens (transformers' repetition penalty); 1 = off")
    p.add_argument("--dtype", default="auto", choices=DECODE_DTYPES, help=DECODE_DTYPE_HELP)
    add_device_arg(p)
    p.add_argument("--compile", action="store_true",
                   help="decode through a compiled graph (torch.compile, inductor; needs a C++ compiler): faster per "
                        "token after a one-time compile of about a minute, kept under $TENFOLD_HOME/compiled so "
                        "later starts take seconds; not with --memory")
    p.add_argument("--memory", action="store_true",
                   help="keep what the cache evicts in a retrieval index and recall the most relevant of it into "
                        "each new turn (recalled chunks are listed on stderr)")
    p.add_argument("--memory-k", type=int, default=3, help="chunks recalled per turn at most (default 3)")
    p.add_argument("--memory-min-score", type=float, default=0.25,
                   help="recall only chunks at least this similar to the turn (cosine, default 0.25)")
    p.set_defaults(func=_chat)


def _stream_ppl(args) -> int:
    from rich.progress import Progress

    from tenfold.data import austen, read_text
    from tenfold.streaming.perplexity import perplexity

    config = SinkConfig.from_args(args)
    if args.blocked and args.method not in ("window", "sink"):
        raise TenfoldError("--blocked applies to --method window or sink")
    if args.tokens < 2:
        raise TenfoldError(f"--tokens must be >= 2 (got {args.tokens})")
    text = read_text(args.text) if args.text else austen(None if args.book == "all" else args.book)
    from tenfold.devices import default_dtype, resolve_device

    dtype = str(default_dtype(resolve_device(args.device))).removeprefix("torch.") if args.dtype == "auto" else args.dtype
    model, tok = load_for_decoding(args.model, dtype, args.device)
    ids = tok(text, return_tensors="pt").input_ids[0]
    if ids.numel() < args.tokens:
        raise TenfoldError(f"the text has only {ids.numel()} tokens, fewer than --tokens {args.tokens}")
    ids = ids[: args.tokens]
    with Progress(transient=True) as bar:  # on stderr (tenfold.cli), so --json keeps it
        task = bar.add_task(f"{args.method} {config.label()}", total=args.tokens - 1)
        result = perplexity(model, ids, args.method, config, blocked=args.blocked,
                            progress=lambda done, total: bar.update(task, completed=done))
    row = result.as_dict()
    if args.plot:
        from tenfold.streaming.plots import plot_log_ppl

        fig = plot_log_ppl([result], f"{args.method} {config.label()}")
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110, bbox_inches="tight")
        row["plot"] = str(Path(args.plot).resolve())  # where the figure went (--json too)
    if args.json:
        print_json(row)
    else:
        print(f"{row['method']}: ppl {row['ppl']:.3f} over {row['tokens']} tokens, cache {config.label()}, "
              f"{row['tokens_per_s']:.1f} tokens/s, peak RSS {row['peak_rss_mb']:.0f} MB")
        if args.plot:
            print(f"figure: {row['plot']}")
    return 0


def _compiled_decoder(model, config: SinkConfig, memory):
    """The compiled decode step for ``chat --compile``, compiled now (progress on stderr); None, with one line
    saying why, where it cannot be used (the chat then decodes eagerly)."""
    from tenfold.streaming.compiled import compiled_or_none

    if memory:
        print("tenfold chat: --compile is not used with --memory (recall feeds tokens itself): decoding eagerly",
              file=sys.stderr)
        return None
    return compiled_or_none(model, config, lambda line: print(f"tenfold chat: {line}", file=sys.stderr, flush=True))


def _chat(args) -> int:
    from tenfold.streaming.chat import StreamingChat

    config = SinkConfig.from_args(args)
    if args.memory and args.memory_k < 1:
        raise TenfoldError(f"--memory-k must be >= 1 (got {args.memory_k})")
    if args.memory and not -1 <= args.memory_min_score <= 1:
        raise TenfoldError(f"--memory-min-score is a cosine similarity in [-1, 1] (got {args.memory_min_score})")
    memory = {"k": args.memory_k, "min_score": args.memory_min_score} if args.memory else False
    model, tok = load_for_decoding(args.model, args.dtype, args.device)
    from tenfold.models.quantize import weights_label
    from tenfold.models.sampling import Sampler

    sampler = Sampler(args.temperature, args.top_p, args.top_k, args.min_p, args.repetition_penalty)
    decoder = _compiled_decoder(model, config, memory) if args.compile else None
    chat = StreamingChat(model, tok, config, system=args.system,
                         max_new_tokens=args.max_new_tokens, memory=memory, sampler=sampler, decoder=decoder)
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"tenfold chat: {weights_label(model)}, sink cache {config.label()}, "
              f"{'compiled' if decoder else 'eager'} decoding. Commands: /reset /stats /quit", file=sys.stderr)
    while True:
        if interactive:
            print("> ", end="", file=sys.stderr, flush=True)
        line = sys.stdin.readline()
        if not line:
            break
        line = line.strip()
        if not line:
            continue
        if line in ("/quit", "/exit"):
            break
        if line == "/reset":
            chat.reset()
            print("(conversation reset)", flush=True)
            continue
        if line == "/stats":
            print_json(chat.stats())
            continue
        # Ctrl-C during a reply stops that reply only: the handler sets a flag the decoding loop reads before each
        # token, so a forward pass is never cut in half and the cache holds exactly the turn and the tokens shown.
        # At the prompt, Ctrl-C ends the chat (exit 130, tenfold.cli) and end of input ends it with 0.
        stopped: list[bool] = []
        previous = signal.signal(signal.SIGINT, lambda signum, frame: stopped.append(True))
        try:
            for n, piece in enumerate(chat.say(line, should_stop=lambda: bool(stopped))):
                if n == 0 and chat.last_recalled:
                    print(f"[memory: recalled {len(chat.last_recalled)}: "
                          + " | ".join(t[:60] for t in chat.last_recalled) + "]", file=sys.stderr, flush=True)
                print(piece, end="", flush=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        print(flush=True)
        if chat.turn_dropped:
            print("(stopped while reading your message: it was not sent; the chat goes on from before it)",
                  file=sys.stderr, flush=True)
        elif stopped:
            print("(reply stopped)", file=sys.stderr, flush=True)
    return 0
