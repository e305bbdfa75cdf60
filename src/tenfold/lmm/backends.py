"""Vision-language backends the probing harness can ask: the local VLM in-process, or any OpenAI-compatible server.

Both take OpenAI chat messages whose ``content`` is a string or a list of ``text`` / ``image_url`` parts (images as
data URLs) and return the reply text. ``OpenAIVision`` works with GPT-4-class services, vLLM, llama.cpp's server and
``tenfold serve --vlm``; failed requests are retried by the ``openai`` SDK itself (time-outs, connection errors,
408/409/429/5xx, exponential back-off with jitter, honouring ``Retry-After``), ``max_retries`` times. ``LocalVLM`` turns
image parts into the VLM's ``<image>`` placeholders and runs one request at a time.
"""
from __future__ import annotations

import os
import threading
from abc import ABC, abstractmethod

from tenfold.errors import TenfoldError


class BackendError(TenfoldError):
    """A request failed for a passing reason (time-out, connection, 5xx, 429; after the SDK's retries) or the server
    sent something that is not a text answer."""


class RequestCancelled(TenfoldError):
    """The run was stopped (Ctrl-C): a request (or the SDK's retry of one) was not sent."""


class VisionBackend(ABC):
    name: str = "backend"
    stop: threading.Event | None = None  # set by the runner: once set, no request leaves (retries included)

    @abstractmethod
    def answer(self, messages: list[dict], max_tokens: int = 32) -> str:
        """The reply to ``messages`` (greedy where the backend allows)."""


def split_parts(content) -> tuple[list[tuple[str, str]], int]:
    """[(kind, value)] for a message's content ("text" / "image"), and the number of images."""
    if isinstance(content, str):
        return [("text", content)], 0
    if not isinstance(content, list):
        raise TenfoldError("message content must be a string or a list of parts")
    parts = []
    for p in content:
        if p.get("type") == "text":
            parts.append(("text", p["text"]))
        elif p.get("type") == "image_url":
            parts.append(("image", p["image_url"]["url"]))
        else:
            raise TenfoldError(f"unknown content part {p.get('type')!r}")
    return parts, sum(k == "image" for k, _ in parts)


class LocalVLM(VisionBackend):
    """A :class:`~tenfold.vision.vlm.VisionLanguageModel` in this process."""

    def __init__(self, vlm, name: str = "local-vlm"):
        self.vlm, self.name = vlm, name
        self._lock = threading.Lock()

    def answer(self, messages, max_tokens=32):
        from tenfold.serve.images import BadImage, decode_data_url
        from tenfold.vision.vlm import IMAGE_TOKEN

        chat, images = [], []
        for m in messages:
            parts, _ = split_parts(m["content"])
            text = []
            for kind, value in parts:
                if kind == "image":
                    try:
                        images.append(decode_data_url(value))
                    except BadImage as exc:
                        raise TenfoldError(f"bad image in the request: {exc}") from None
                    text.append(IMAGE_TOKEN + "\n")
                else:
                    text.append(value)
            chat.append({"role": m["role"], "content": "".join(text)})
        with self._lock:
            ids = self.vlm.prompt_ids(chat)
            return self.vlm.generate([ids], [images], max_new_tokens=max_tokens)[0]


class OpenAIVision(VisionBackend):
    """An OpenAI-compatible chat endpoint that takes images (``base_url`` like ``http://127.0.0.1:8000/v1``).

    ``max_retries``: retries of a request that failed for a passing reason, done by the ``openai`` SDK.
    Raises TenfoldError without ``base_url`` or with a negative ``max_retries``."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0,
                 max_retries: int = 2):
        import openai

        if not base_url:
            raise TenfoldError("the openai backend needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        if max_retries < 0:
            raise TenfoldError(f"--retries must be >= 0 (got {max_retries})")
        self.name, self.base_url, self.attempts = model, base_url, max_retries + 1
        # Every attempt, the SDK's retries included, passes this hook first: after Ctrl-C nothing more is sent
        # (the SDK's back-off sleep cannot be interrupted, but what follows it is refused). The SDK's own httpx
        # client class keeps its defaults (redirects followed, its connection limits and time-out).
        http = openai.DefaultHttpxClient(event_hooks={"request": [self._refuse_when_stopped]})
        from tenfold.prompting.backends import openai_client

        self.client = openai_client(base_url, api_key, timeout=timeout, max_retries=max_retries, http_client=http)

    def _refuse_when_stopped(self, request) -> None:
        if self.stop is not None and self.stop.is_set():
            raise RequestCancelled("the run was stopped; request not sent")

    def answer(self, messages, max_tokens=32):
        import openai

        try:
            resp = self.client.chat.completions.create(model=self.name, messages=messages, max_tokens=max_tokens,
                                                       temperature=0.0)
        except RequestCancelled:
            raise
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            if self.stop is not None and self.stop.is_set():  # the SDK wraps the hook's refusal
                raise RequestCancelled("the run was stopped; request not sent") from None
            raise BackendError(f"{self.base_url}: {type(exc).__name__} (gave up after {self.attempts} attempts)") from None
        except openai.APIStatusError as exc:
            if exc.status_code >= 500 or exc.status_code in (408, 409, 429):
                raise BackendError(f"{self.base_url} answered {exc.status_code} (gave up after {self.attempts} "
                                   "attempts)") from None
            raise TenfoldError(f"{self.base_url} answered {exc.status_code}") from None
        except (ValueError, TypeError, AttributeError) as exc:  # a body that is not a chat completion
            raise BackendError(f"{self.base_url} sent something that is not a chat completion ({exc})") from None
        try:
            text = resp.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise BackendError(f"{self.base_url} sent a reply without text")
        return text
