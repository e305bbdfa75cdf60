"""One interface to language models, in-process or over an OpenAI-compatible HTTP API.

``complete(messages, n=1, temperature=0.0, max_tokens=256, stop=None) -> list[str]`` returns ``n``
assistant replies to a chat. :class:`LocalLM` runs a transformers model in this process (any
prompt length: it streams the prompt through a sink cache, StreamingLLM Sec. 3.2);
:class:`OpenAICompatible` talks to ``tenfold serve``, vLLM, llama.cpp's server or OpenAI itself
through the official ``openai`` client, with time-outs, retries with back-off on 5xx and
connection errors, and one clear :class:`~tenfold.errors.TenfoldError` for a 4xx.
"""
from __future__ import annotations

import os
from abc import ABC, abstractmethod

from tenfold.errors import TenfoldError


def _check(messages, n: int, temperature: float, max_tokens: int) -> None:
    if not isinstance(messages, list) or not messages:
        raise TenfoldError("messages must be a non-empty list of {'role', 'content'} dicts")
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant") or not isinstance(m.get("content"), str):
            raise TenfoldError(f"bad message {m!r}: need role system/user/assistant and string content")
    if n < 1:
        raise TenfoldError(f"n must be >= 1 (got {n})")
    if not temperature >= 0:  # also rejects NaN
        raise TenfoldError(f"temperature must be >= 0 (got {temperature})")
    if max_tokens < 1:
        raise TenfoldError(f"max_tokens must be >= 1 (got {max_tokens})")


class Backend(ABC):
    """A chat model. ``calls`` and ``completion_tokens`` count what was spent (for budgets, e.g. STOP)."""

    name: str = "backend"

    def __init__(self):
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @abstractmethod
    def complete(self, messages: list[dict], n: int = 1, temperature: float = 0.0, max_tokens: int = 256,
                 stop: list[str] | None = None) -> list[str]:
        """``n`` replies to ``messages``."""


class LocalLM(Backend):
    """A transformers causal LM in this process (default: the bundled SmolLM2-135M-Instruct)."""

    def __init__(self, model=None, tokenizer=None, config=None, seed: int = 0, device=None):
        """``config``: the sink cache's :class:`~tenfold.streaming.SinkConfig` (default 4+1020)."""
        super().__init__()
        if model is None:
            from tenfold.models import load_lm

            model, tokenizer = load_lm(quantize=None, device=device)
        elif tokenizer is None:
            raise TenfoldError("LocalLM needs the tokenizer that goes with the model")
        from tenfold.serve.engine import Engine

        self.model, self.tok = model, tokenizer
        self.name = getattr(getattr(model, "config", None), "_name_or_path", "") or "local"
        self.engine = Engine(model, tokenizer, config)  # run synchronously: no worker thread
        self.seed = seed

    def complete(self, messages, n=1, temperature=0.0, max_tokens=256, stop=None):
        from tenfold.models.lm import chat_ids
        from tenfold.serve.engine import GenParams, Job

        _check(messages, n, temperature, max_tokens)
        ids = chat_ids(self.tok, messages)[0].tolist()
        params = GenParams(max_tokens=max_tokens, temperature=temperature, top_p=1.0, stop=list(stop or []),
                           seed=self.seed + self.calls, n=n)
        texts: dict[int, list[str]] = {}
        job = Job(ids, params, emit=lambda i, delta, reason, logprobs: texts.setdefault(i, []).append(delta))
        self.engine.run(job)
        self.calls += 1
        self.prompt_tokens += len(ids)
        self.completion_tokens += job.completion_tokens
        return ["".join(texts.get(i, [])) for i in range(n)]


class OpenAICompatible(Backend):
    """Any OpenAI-compatible chat endpoint (``base_url`` like ``http://127.0.0.1:8000/v1``)."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 max_retries: int = 3):
        super().__init__()
        self.name, self.base_url = model, base_url
        self.client = openai_client(base_url, api_key, timeout=timeout, max_retries=max_retries)

    def complete(self, messages, n=1, temperature=0.0, max_tokens=256, stop=None, top_p=None, seed=None):
        """As :meth:`Backend.complete`; ``top_p`` and ``seed`` (sent only when given) reach the server's sampler."""
        import openai
        from openai.types.chat import ChatCompletion

        _check(messages, n, temperature, max_tokens)
        extra = {k: v for k, v in (("top_p", top_p), ("seed", seed)) if v is not None}
        try:
            resp = self.client.chat.completions.create(model=self.name, messages=messages, n=n, temperature=temperature,
                                                       max_tokens=max_tokens, stop=list(stop) if stop else None,
                                                       **extra)
        except openai.APIStatusError as exc:
            raise TenfoldError(f"{self.base_url} answered {exc.status_code}: {_message(exc)}") from None
        except openai.APIConnectionError as exc:
            raise TenfoldError(f"cannot reach {self.base_url} ({type(exc).__name__}: {exc})") from None
        except (ValueError, TypeError, AttributeError) as exc:  # a 200 whose body is not JSON the SDK can read
            raise TenfoldError(f"{self.base_url} sent something that is not a chat completion "
                               f"({type(exc).__name__})") from None
        if not isinstance(resp, ChatCompletion):  # e.g. an HTML page served with 200
            raise TenfoldError(f"{self.base_url} sent something that is not a chat completion")
        self.calls += 1
        if resp.usage is not None:
            self.prompt_tokens += resp.usage.prompt_tokens or 0
            self.completion_tokens += resp.usage.completion_tokens or 0
        choices = sorted(resp.choices or [], key=lambda c: c.index)
        if len(choices) != n:
            raise TenfoldError(f"{self.base_url} sent {len(choices)} choice(s) for n={n}")
        texts = [getattr(c.message, "content", None) for c in choices]
        if not all(isinstance(t, str) for t in texts):
            raise TenfoldError(f"{self.base_url} sent a reply without text")
        return texts


def openai_client(base_url: str, api_key: str | None = None, **kwargs):
    """``openai.OpenAI`` for ``base_url``; the key is ``api_key``, else ``$OPENAI_API_KEY``, else "none" (servers
    without keys). ``kwargs`` go to the client. Raises TenfoldError (one line) for a URL the SDK cannot use."""
    import openai

    try:
        return openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY") or "none", **kwargs)
    except Exception as exc:  # the SDK's httpx raises its own InvalidURL for a host like 256.1.1.1
        if type(exc).__name__ != "InvalidURL":
            raise
        raise TenfoldError(f"--base-url {base_url!r} is not a usable URL ({exc})") from None


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)


def add_backend_args(parser) -> None:
    """``--backend local|openai --base-url URL --model NAME`` for every CLI verb that prompts a model."""
    parser.add_argument("--backend", choices=["local", "openai"], default="local",
                        help="local: a transformers model in-process; openai: an OpenAI-compatible server")
    parser.add_argument("--base-url", default=None, help="for --backend openai, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default=None, help="model name or path (default: the bundled SmolLM2)")
    from tenfold.argtypes import DEVICE_HELP, add_device_arg

    add_device_arg(parser, help=DEVICE_HELP + " (--backend local; the server chooses its own)")


def backend_from_args(args) -> Backend:
    if args.backend == "openai":
        if not args.base_url:
            raise TenfoldError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if getattr(args, "device", None) is not None:
            raise TenfoldError("--device is for --backend local; the server at --base-url runs where it runs")
        if getattr(args, "dtype", "auto") != "auto":
            raise TenfoldError("--dtype is for --backend local; the server at --base-url chooses its own")
        from tenfold.models.lm import DEFAULT_LM

        return OpenAICompatible(args.base_url, args.model or DEFAULT_LM)
    if args.base_url:
        raise TenfoldError("--base-url is only used with --backend openai")
    from tenfold.models import load_lm

    model, tok = load_lm(args.model, quantize=None, device=args.device)
    return LocalLM(model, tok)
