"""``tenfold serve``: an OpenAI-compatible server with unbounded conversations (sink cache sessions)."""
from __future__ import annotations

import sys
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.streaming.cli import DTYPES, _check_cache_args, _load


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI-compatible HTTP server (chat/completions, SSE streaming, sessions)")
    p.add_argument("--model", default=None, help="model to serve (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--window", type=int, default=1020)
    p.add_argument("--dtype", default="float32", choices=DTYPES)
    p.add_argument("--max-tokens-cap", type=int, default=2048, help="largest max_tokens a request may ask for")
    p.add_argument("--default-max-tokens", type=int, default=256)
    p.add_argument("--max-active", type=int, default=16, help="requests generating at once (round robin)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    p.add_argument("--max-sessions", type=int, default=64)
    p.add_argument("--session-memory-mb", type=float, default=2048)
    p.add_argument("--session-ttl", type=float, default=3600, help="seconds an idle session is kept")
    p.add_argument("--max-body-bytes", type=int, default=1_000_000)
    p.add_argument("--served-name", default=None, help="model id clients must send (default: the model name)")
    p.add_argument("--vlm", default=None, help="serve a vision-language model from `tenfold vision train-vlm` "
                   "(takes OpenAI image_url parts with base64 data URLs)")
    p.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image a request may send")
    p.set_defaults(func=_serve)


def _serve(args) -> int:
    import uvicorn

    from tenfold.models.lm import DEFAULT_LM
    from tenfold.serve.app import create_app
    from tenfold.serve.engine import Engine
    from tenfold.serve.sessions import SessionStore

    _check_cache_args(args.sinks, args.window)
    if not 0 < args.port < 65536:
        raise TenfoldError(f"--port must be between 1 and 65535 (got {args.port})")
    if args.default_max_tokens > args.max_tokens_cap or args.default_max_tokens < 1:
        raise TenfoldError("--default-max-tokens must be between 1 and --max-tokens-cap")
    for name in ("max_active", "max_queue", "max_sessions"):
        if getattr(args, name) < 1:
            raise TenfoldError(f"--{name.replace('_', '-')} must be >= 1")
    vision = None
    if args.vlm:
        from tenfold.vision.vlm import VisionLanguageModel

        import torch

        if args.model:
            raise TenfoldError("--vlm brings its own language model (named in its vlm.json); leave out --model")
        vision = VisionLanguageModel.load(args.vlm, lm_dtype=getattr(torch, args.dtype))
        model, tok = vision.lm, vision.tokenizer
        name = args.served_name or Path(args.vlm).resolve().name
    else:
        model, tok = _load(args.model, args.dtype)
        name = args.served_name or args.model or DEFAULT_LM
    sessions = SessionStore(args.max_sessions, args.session_memory_mb, args.session_ttl)
    engine = Engine(model, tok, args.sinks, args.window, max_active=args.max_active, max_queue=args.max_queue,
                    sessions=sessions, vision=vision).start()
    app = create_app(engine, name, max_tokens_cap=args.max_tokens_cap, default_max_tokens=args.default_max_tokens,
                     max_body_bytes=args.max_body_bytes, max_image_pixels=args.max_image_pixels)
    print(f"tenfold serve: {name} (cache {args.sinks}+{args.window}, {args.dtype}) on "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        engine.shutdown()
    return 0
