"""``tenfold serve``: an OpenAI-compatible server with unbounded conversations (sink cache sessions)."""
from __future__ import annotations

import argparse

import os
import sys
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.models.decode import DECODE_DTYPE_HELP, DECODE_DTYPES, load_for_decoding
from tenfold.streaming.config import SinkConfig


def physical_cores() -> int:
    """Physical CPU cores (the default of ``--threads``); logical CPUs where psutil cannot tell."""
    import psutil

    return psutil.cpu_count(logical=False) or os.cpu_count() or 1


def default_compile() -> bool:
    """Whether ``serve`` compiles by default: ``$TENFOLD_COMPILE`` (0 / off / false / no: not), else yes."""
    return os.environ.get("TENFOLD_COMPILE", "1").strip().lower() not in ("0", "off", "false", "no")


def add_commands(sub) -> None:
    p = sub.add_parser("serve", help="OpenAI- and Anthropic-compatible HTTP server on sink-cache sessions (chat, "
                       "Responses, Messages, embeddings; a chat page at /)")
    p.add_argument("--model", default=None, help="model to serve (default: the bundled SmolLM2-135M-Instruct)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    SinkConfig.add_args(p)  # --prefill-chunk is also the prefill budget of one scheduling round
    p.add_argument("--dtype", default="auto", choices=DECODE_DTYPES, help=DECODE_DTYPE_HELP)
    from tenfold.argtypes import add_device_arg

    add_device_arg(p)
    p.add_argument("--keep", choices=["sinks", "system"], default="sinks",
                   help="what the cache never evicts: the first --sinks tokens (StreamingLLM), or the conversation's "
                   "system prompt (as llama.cpp's --keep), capped at --keep-max tokens")
    p.add_argument("--keep-max", type=int, default=None,
                   help="most tokens --keep system holds (default: 256, or half the window if that is smaller)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=default_compile(),
                   help="decode a lone stream through a compiled graph (torch.compile, inductor; needs a C++ "
                        "compiler), compiled at start-up: about a minute the first time, seconds once kept under "
                        "$TENFOLD_HOME/compiled (default: on, or $TENFOLD_COMPILE)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads, set once at start (default: the number of physical cores)")
    keys = p.add_argument_group("tenants")
    keys.add_argument("--api-key", action="append", default=[], metavar="KEY",
                      help="a key clients must send as 'Authorization: Bearer KEY' (repeatable; also env "
                      "TENFOLD_API_KEY); each key's sessions are its own")
    keys.add_argument("--api-key-file", default=None, metavar="FILE", help="more keys, one per line ('#' comments)")
    keys.add_argument("--public-metrics", action="store_true",
                      help="serve /metrics without a key even when API keys are set")
    keys.add_argument("--allowed-hosts", default=None, metavar="HOSTS",
                      help="comma-separated Host header names the server answers, or '*' (default: localhost, "
                      "127.0.0.1 and [::1] when --host is a loopback address, else any): a web page cannot reach a "
                      "local server through a rebinding DNS name")
    keys.add_argument("--allowed-origins", default="", metavar="ORIGINS",
                      help="comma-separated origins browsers may call from (CORS), or '*'; default: none")
    lim = p.add_argument_group("limits")
    lim.add_argument("--max-tokens-cap", type=int, default=2048, help="largest max_tokens a request may ask for")
    lim.add_argument("--default-max-tokens", type=int, default=256)
    lim.add_argument("--max-prompt-tokens", type=int, default=8192,
                     help="longest prompt (in tokens) a request may send; about a minute of prefill on 2 CPU cores")
    lim.add_argument("--max-active", type=int, default=16, help="requests generating at once (round robin)")
    lim.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429")
    lim.add_argument("--max-sessions", type=int, default=64,
                     help="sessions held; with API keys each key gets an equal share, as of --session-memory-mb")
    lim.add_argument("--session-memory-mb", type=float, default=2048,
                     help="bound on all sink-cache memory: sessions and the copies made for n > 1 choices")
    lim.add_argument("--session-ttl", type=float, default=3600, help="seconds an idle session is kept")
    lim.add_argument("--max-stored-responses", type=int, default=256,
                     help="Responses API: stored responses kept per API key (least recently used go first)")
    lim.add_argument("--truncation", choices=["auto", "disabled"], default="auto",
                     help="Responses API, when a request does not say: 'auto' lets the sink cache evict the oldest "
                     "tokens of a long conversation, 'disabled' refuses what does not fit the cache")
    lim.add_argument("--max-body-bytes", type=int, default=1_000_000)
    lim.add_argument("--max-images", type=int, default=4, help="images one request may send")
    lim.add_argument("--max-image-pixels", type=int, default=4096 * 4096, help="largest image a request may send")
    lim.add_argument("--idle-timeout", type=float, default=15,
                     help="seconds a connection may stay open with no request in flight")
    lim.add_argument("--drain-timeout", type=float, default=30,
                     help="on SIGTERM, seconds active requests may run on before their streams are ended")
    p.add_argument("--served-name", default=None, help="model id clients must send (default: the model name)")
    p.add_argument("--no-ui", action="store_true",
                   help="do not serve the chat page at / (it shows what the sink cache still holds)")
    p.add_argument("--embedding-model", default=None, metavar="NAME",
                   help="sentence-transformers model behind /v1/embeddings (default: the bundled all-minilm-l6-v2; "
                   "'none' serves no embeddings)")
    p.add_argument("--vlm", default=None, help="serve a vision-language model from `tenfold vision train-vlm` "
                   "(takes OpenAI image_url parts with base64 data URLs)")
    p.set_defaults(func=_serve)


def read_api_keys(keys: list[str], key_file: str | None, env: dict | None = None) -> list[str]:
    """API keys from ``--api-key``, ``--api-key-file`` (one per line, blank lines and ``#`` comments skipped) and
    the ``TENFOLD_API_KEY`` environment variable; raises :class:`TenfoldError` for an unreadable file or a bad key."""
    env = os.environ if env is None else env
    found = list(keys)
    if "TENFOLD_API_KEY" in env:
        if not env["TENFOLD_API_KEY"].strip():
            raise TenfoldError("TENFOLD_API_KEY is set but empty; unset it to serve without keys")
        found.append(env["TENFOLD_API_KEY"])
    if key_file:
        try:
            lines = Path(key_file).read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise TenfoldError(f"cannot read --api-key-file {key_file}: {exc.__class__.__name__}") from None
        found += [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
        if not any(line.strip() and not line.strip().startswith("#") for line in lines):
            raise TenfoldError(f"--api-key-file {key_file} holds no keys")
    for key in found:
        if not key.strip() or any(c.isspace() for c in key) or not key.isprintable() or not key.isascii():
            raise TenfoldError("an API key must be printable ASCII without spaces")
    return list(dict.fromkeys(found))


LOOPBACK_NAMES = ["localhost", "127.0.0.1", "[::1]"]  # as the Host header carries them


def allowed_hosts(given: str | list | None, host: str) -> list[str]:
    """The Host header names to answer: ``given`` (comma-separated, ``*`` for any), else the loopback names when
    the server listens on a loopback address (DNS rebinding cannot then reach it from a web page), else any."""
    if isinstance(given, list):  # already resolved
        return given
    if given is not None:
        names = [h.strip().lower() for h in given.split(",") if h.strip()]
        if not names:
            raise TenfoldError("--allowed-hosts is empty; give host names, or '*' for any")
        for name in names:
            if name != "*" and ("*" in name[1:] or (name.startswith("*") and not name.startswith("*."))):
                raise TenfoldError(f"--allowed-hosts: {name!r} is not a host name or a '*.example.com' pattern")
        return names
    import ipaddress

    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host.lower() == "localhost"
    return list(LOOPBACK_NAMES) if loopback else ["*"]


def _check_listen(host: str, port: int) -> None:
    """Bind HOST:PORT once, before the model loads: a port in use or an unknown host is one line, not uvicorn's
    "ERROR: ..." after the load (SO_REUSEADDR as uvicorn sets it, so a port in TIME_WAIT still passes)."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise TenfoldError(f"--host {host}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise TenfoldError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _check(args) -> SinkConfig:
    """The sink cache's config; TenfoldError (one line) for any bad flag, before the model loads."""
    config = SinkConfig.from_args(args)
    if not 0 < args.port < 65536:
        raise TenfoldError(f"--port must be between 1 and 65535 (got {args.port})")
    _check_listen(args.host, args.port)
    if args.default_max_tokens > args.max_tokens_cap or args.default_max_tokens < 1:
        raise TenfoldError("--default-max-tokens must be between 1 and --max-tokens-cap")
    for name in ("max_active", "max_queue", "max_sessions", "max_prompt_tokens", "max_body_bytes", "max_image_pixels",
                 "max_stored_responses"):
        if getattr(args, name) < 1:
            raise TenfoldError(f"--{name.replace('_', '-')} must be >= 1")
    if args.keep_max is None:
        args.keep_max = min(256, args.window // 2)
    if args.keep_max < 0 or args.keep_max > args.window:
        raise TenfoldError(f"--keep-max must be between 0 and --window ({args.window})")
    if args.max_images < 0:
        raise TenfoldError("--max-images must be >= 0")
    if args.threads is not None and args.threads < 1:
        raise TenfoldError("--threads must be >= 1")
    for name in ("session_memory_mb", "session_ttl", "idle_timeout"):
        if not getattr(args, name) > 0:
            raise TenfoldError(f"--{name.replace('_', '-')} must be > 0")
    if not args.drain_timeout >= 0:
        raise TenfoldError("--drain-timeout must be >= 0")
    args.allowed_hosts = allowed_hosts(args.allowed_hosts, args.host)
    return config


def _serve(args) -> int:
    import torch
    import uvicorn

    from tenfold.models.lm import DEFAULT_LM
    from tenfold.serve.app import create_app
    from tenfold.serve.settings import ServeSettings
    from tenfold.serve.connections import DrainingServer, IdleTimeoutH11Protocol
    from tenfold.serve.engine import Engine
    from tenfold.serve.sessions import SessionStore

    config = _check(args)
    api_keys = read_api_keys(args.api_key, args.api_key_file)
    origins = [o.strip() for o in args.allowed_origins.split(",") if o.strip()]
    hosts = args.allowed_hosts
    threads = args.threads or physical_cores()
    torch.set_num_threads(threads)
    embeddings = None
    if (args.embedding_model or "").lower() != "none":
        from tenfold.models import DEFAULT_EMBEDDER
        from tenfold.retrieval.embedder import Embedder
        from tenfold.serve.embeddings import EmbeddingService

        embeddings = EmbeddingService(Embedder(args.embedding_model, device=args.device),
                                      args.embedding_model or DEFAULT_EMBEDDER)
    vision = None
    if args.vlm:
        from tenfold.vision.vlm import VisionLanguageModel

        if args.model:
            raise TenfoldError("--vlm brings its own language model (named in its vlm.json); leave out --model")
        if args.dtype == "int4":
            raise TenfoldError("--dtype int4 applies to language models; give --vlm with float32, float16 or bfloat16")
        lm_dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)  # auto: the device's default
        vision = VisionLanguageModel.load(args.vlm, lm_dtype=lm_dtype, device=args.device)
        model, tok = vision.lm, vision.tokenizer
        name = args.served_name or Path(args.vlm).resolve().name
    else:
        model, tok = load_for_decoding(args.model, args.dtype, args.device)
        name = args.served_name or args.model or DEFAULT_LM
    decoder = None
    if args.compile:
        from tenfold.streaming.compiled import compiled_or_none

        decoder = compiled_or_none(model, config, lambda line: print(f"tenfold serve: {line}", file=sys.stderr,
                                                                     flush=True))
    sessions = SessionStore(args.max_sessions, args.session_memory_mb, args.session_ttl, tenants=max(1, len(api_keys)))
    engine = Engine(model, tok, config, max_active=args.max_active, max_queue=args.max_queue,
                    sessions=sessions, vision=vision, decoder=decoder,
                    keep_max=args.keep_max if args.keep == "system" else 0).start()
    settings = ServeSettings(name, max_tokens_cap=args.max_tokens_cap, default_max_tokens=args.default_max_tokens,
                             max_prompt_tokens=args.max_prompt_tokens, max_body_bytes=args.max_body_bytes,
                             max_image_pixels=args.max_image_pixels, max_images=args.max_images, api_keys=api_keys,
                             allowed_origins=origins, allowed_hosts=hosts, public_metrics=args.public_metrics,
                             body_timeout=args.idle_timeout, truncation=args.truncation,
                             max_stored_responses=args.max_stored_responses)
    app = create_app(engine, settings, embeddings, ui=not args.no_ui)
    from tenfold.models.quantize import weights_label

    kept = f", keeps system prompts up to {args.keep_max} tokens" if args.keep == "system" else ""
    print(f"tenfold serve: {name} (cache {config.label()}{kept}, {weights_label(model)}, {threads} threads, "
          f"{'compiled' if decoder else 'eager'} decoding) on "
          f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
    if not args.no_ui:
        print(f"tenfold serve: chat page on http://{args.host}:{args.port}/", file=sys.stderr, flush=True)
    if api_keys:
        print(f"tenfold serve: {len(api_keys)} API key(s); each key's sessions are private to it", file=sys.stderr)
    else:
        print("tenfold serve: no API key set: anyone who reaches this port may use it, and sessions are shared by "
              "all clients (any client can continue or reset any session id); use --api-key", file=sys.stderr,
              flush=True)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", http=IdleTimeoutH11Protocol,
                            timeout_keep_alive=max(1, int(round(args.idle_timeout))),
                            timeout_graceful_shutdown=int(args.drain_timeout) + 10)
    try:
        DrainingServer(config, engine, args.drain_timeout).run()
    finally:
        engine.shutdown()
    return 0
