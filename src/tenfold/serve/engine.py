"""The generation engine behind ``tenfold serve``: one model, sink caches, fair token-level scheduling.

Every request becomes a :class:`Job`. One worker thread owns the model. Each round it prefills at
most one chunk's worth of prompt tokens (``prefill_chunk``), shared among the jobs still reading
their prompts, least recently served first (several short prompts fit in one round; a long one takes
its chunk), then decodes one token for every choice of every other active job in a single batched
forward (continuous batching, :mod:`tenfold.serve.batching`): jobs join and leave between rounds,
concurrent streams share the cost of the linear layers, and long prompts, however many arrive
together, put at most one chunk of prefill between two tokens of a stream.
Prompts of any length are prefilled through a :class:`~tenfold.streaming.SinkCache` (StreamingLLM,
Sec. 3.2), so no conversation hits a context limit. A job tied to a session continues that
session's cache: only tokens after the longest prefix the cache has already consumed are fed.
With a vision-language model (``vision=``), a job may carry images: its prompt is embedded once (image
placeholders filled with projected image features) and prefilled from those embeddings; each image stands in the
session history as a key derived from its pixels, so a session only reuses a prefix showing the same images.
"""
from __future__ import annotations

import bisect
import dataclasses
import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from tenfold.models.sampling import Sampler, SamplingState, stop_token_ids
from tenfold.serve.batching import decode_rows, enable_row_batching
from tenfold.serve.sessions import Session, SessionStore
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.sink_cache import SinkCache, enable_streaming


@dataclass
class GenParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    repetition_penalty: float = 1.0  # over prompt and answer tokens (transformers / vLLM)
    presence_penalty: float = 0.0  # OpenAI's, over the answer's tokens
    frequency_penalty: float = 0.0
    stop: list[str] = field(default_factory=list)
    # vLLM's ``min_tokens``: before this many answer tokens, end-of-sequence tokens are masked and stop strings not
    # checked (``max_tokens`` still ends the answer)
    min_tokens: int = 0
    seed: int | None = None
    n: int = 1
    logprobs: int | None = None  # None: off; k >= 0: each sampled token's logprob and the k most likely alternatives
    prompt_logprobs: bool = False  # also score every prompt token (completions ``echo`` + ``logprobs``)
    # Structured output: makes one grammar state per choice (``mask(logits)``, ``consume(token)``, ``finished``);
    # see tenfold.serve.structured. None: unconstrained.
    constraint: Callable[[], object] | None = None


# One scored token: (token id, log-probability under the model, [(alternative id, log-probability), ...]).
TokenLogprob = tuple[int, float | None, list[tuple[int, float]]]


def score(logits: torch.Tensor, token: int, top: int) -> TokenLogprob:
    """Log-probability of ``token`` under the (V,) ``logits`` (raw model distribution, before temperature / top-p)
    and the ``top`` most likely tokens with theirs."""
    lp = torch.log_softmax(logits.float(), dim=-1)
    alts = []
    if top > 0:
        values, ids = lp.topk(top)
        alts = list(zip(ids.tolist(), values.tolist()))
    return token, float(lp[token]), alts


@dataclass
class Choice:
    """One of a job's ``n`` continuations."""

    cache: SinkCache
    logits: torch.Tensor | None = None
    ids: list[int] = field(default_factory=list)
    text: str = ""  # decoded text so far, cut at a stop string
    sent: int = 0  # characters of ``text`` already emitted
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token in ``ids`` (when asked for)
    logprobs_sent: int = 0
    ends: list[int] = field(default_factory=list)  # with logprobs: each token's end in the decoded text (characters)
    cut: bool = False  # the text was cut at a stop string (tokens past the cut are not part of the answer)
    constraint: object | None = None  # this choice's grammar state (structured output)
    sampling: SamplingState | None = None  # penalties' running state over the prompt and this choice's tokens
    last_token_at: float | None = None  # perf_counter() of the last sampled token (inter-token latency)


def first_stop(text: str, stops: list[str], final: bool = False) -> int | None:
    """Where ``text`` must be cut: the start of the stop string that starts first in the text (whatever the list
    order), or None.

    A match is only decided once no other stop string could still start earlier: if the text ends with the
    beginning of a stop string that starts before the match, more tokens may complete it, so None is returned
    until they do or do not (``final``: no more tokens will come; decide now).
    """
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    if not found:
        return None
    at = min(found)
    if not final:
        for s in stops:
            for b in range(max(0, len(text) - len(s) + 1), at):
                if s.startswith(text[b:]):
                    return None
    return at


class Job:
    """One request: prompt ids, sampling parameters, an optional session; events go to ``emit``.

    ``emit(index, delta, finish_reason, logprobs)`` is called from the worker thread with new text for
    choice ``index``; ``finish_reason`` is set once per choice ('stop', 'length' or 'abort'); ``logprobs`` holds
    the :data:`TokenLogprob` of the tokens generated since the last event (empty unless ``params.logprobs``).
    With ``params.prompt_logprobs``, ``prompt_logprobs`` holds one entry per prompt token (the first has None).
    ``done`` is set when the job ends (``error`` holds the exception if it failed).
    """

    _ids = itertools.count(1)

    def __init__(self, prompt_ids: list[int], params: GenParams, session_id: str | None = None,
                 emit: Callable[[int, str, str | None, list], None] | None = None, on_done: Callable[[], None] | None = None,
                 images: list | None = None, keep: int = 0, tenant: str = ""):
        if not prompt_ids:
            raise ValueError("the prompt is empty")
        self.id = next(self._ids)
        self.prompt_ids, self.params, self.session_id = list(prompt_ids), params, session_id
        self.images = list(images or [])
        self.keep = keep  # leading prompt tokens to hold as sinks (the system prompt), see Engine.keep_max
        self.tenant = tenant  # the API key's namespace: its sessions and counters (SessionStore's per-key shares)
        self.keys = self.prompt_ids  # what the session history records (image positions: keys of the image)
        self.embeds: torch.Tensor | None = None  # (T, d) prompt embeddings when the prompt has images
        self.fed = 0  # prompt positions fed so far
        self.prefill_turn = -1  # the engine round that last fed this job a prefill chunk (or admitted it)
        self.emit = emit or (lambda i, delta, reason, logprobs: None)
        self.prompt_logprobs: list[TokenLogprob] = []
        self.previous_logits: torch.Tensor | None = None  # last prompt position's logits (scores the next chunk)
        self.on_done = on_done or (lambda: None)
        self.cancelled = threading.Event()
        self.abort_reason: str | None = None  # set by Engine.abort_all: unfinished choices end with this reason
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.choices: list[Choice] = []
        self.pending: list[int] = []  # prompt tokens still to prefill
        self.reused = 0  # prompt tokens the session cache had already consumed
        self.session: Session | None = None
        self.sampler = Sampler(params.temperature, params.top_p, max(params.top_k, 0), params.min_p,
                               params.repetition_penalty, params.presence_penalty, params.frequency_penalty)
        self.generator = torch.Generator()
        if params.seed is not None:
            self.generator.manual_seed(params.seed)
        else:
            self.generator.seed()
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None

    def cancel(self) -> None:
        self.cancelled.set()

    @property
    def completion_tokens(self) -> int:
        return sum(len(c.ids) for c in self.choices)


# Counters kept per request, and per API key (Engine.tenant_stats); decode_steps & co. describe whole batches.
_PER_REQUEST = ("completed", "cancelled", "failed", "session_hits", "session_misses", "prompt_tokens_fed",
                "prompt_tokens_reused")


class Engine:
    """Owns the model; runs submitted jobs fairly in one worker thread. Start with :meth:`start`."""

    def __init__(self, model, tokenizer, config: SinkConfig | None = None, max_active: int = 16,
                 max_queue: int = 256, sessions: SessionStore | None = None, vision=None, keep_max: int = 0,
                 decoder=None):
        """``config``: every session's sink cache (:class:`~tenfold.streaming.SinkConfig`, default 4+1020); its
        ``chunk`` is also the prefill budget of one scheduling round. ``decoder``: a
        :class:`~tenfold.streaming.compiled.CompiledDecoder` for ``model`` and ``config``: a decode round of one row
        runs through its compiled graph (batches of several rows decode eagerly, batched). ValueError for a
        ``keep_max`` outside 0..window or a decoder built for another model or cache size."""
        self.config = config = config if config is not None else SinkConfig()
        self.model, self.tok = enable_streaming(model), tokenizer
        enable_row_batching(model)
        self.vision = vision  # a VisionLanguageModel whose ``lm`` is ``model``, or None
        if not 0 <= keep_max <= config.window:
            raise ValueError(f"keep_max must be between 0 and the window ({config.window}), got {keep_max}")
        if decoder is not None and (decoder.model is not model or decoder.size != config.size):
            raise ValueError("the compiled decoder must be built for this model and cache size")
        self.decoder = decoder
        self.keep_max = keep_max  # llama.cpp's --keep: a job's first ``keep`` tokens (its system prompt) become sinks
        self._round = 0  # worker rounds so far (orders prefill turns)
        self.max_active, self.max_queue = max_active, max_queue
        # ``is not None``: an empty store is falsy (len 0), and a configured store must never be replaced.
        self.sessions = sessions if sessions is not None else SessionStore()
        self.stop_ids = stop_token_ids(tokenizer, model)
        self.waiting: deque[Job] = deque()
        self.active: list[Job] = []
        self.stats = {"completed": 0, "cancelled": 0, "failed": 0, "session_hits": 0, "session_misses": 0,
                      "prompt_tokens_fed": 0, "prompt_tokens_reused": 0, "decode_steps": 0, "decoded_rows": 0,
                      "max_batch_rows": 0, "compiled_steps": 0}
        self.tenant_stats: dict[str, dict[str, int]] = {}  # the per-request counters above, per API key
        self._cond = threading.Condition()
        self._stop = False
        self._draining = False
        self.started = int(time.time())  # Unix seconds: the model card's ``created``
        # observer(kind, seconds) for "ttft" (submit -> first token) and "itl" (between a choice's tokens);
        # tenfold.serve.metrics sets it. Called from the worker thread.
        self.observer: Callable[[str, float], None] | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self) -> "Engine":
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="tenfold-engine", daemon=True)
            self._thread.start()
        return self

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            for job in list(self.waiting) + self.active:
                job.cancel()
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)

    class QueueFull(RuntimeError):
        """The waiting queue is full (HTTP 429)."""

    class Unavailable(RuntimeError):
        """The engine is draining or stopped and takes no new work (HTTP 503)."""

    class OutOfCacheMemory(RuntimeError):
        """Forking ``n`` choices would exceed the cache memory bound even after evicting idle sessions (HTTP 503)."""

    class RequestTooLarge(ValueError):
        """The request could never fit the server's bounds, whatever else is running (HTTP 400)."""

    def drain(self) -> None:
        """Stop taking new jobs; jobs already submitted run on (:meth:`abort_all` ends them early)."""
        with self._cond:
            self._draining = True

    def session_state(self, session_id: str) -> dict | None:
        """What session ``session_id``'s sink cache holds (None without such a session): ``ids``, the token ids fed
        in order; ``sinks`` (the first tokens, kept for good), ``evicted`` (the next ones, gone) and the rest, still
        in the window; ``memory_bytes``. ``busy``: a request is using it now (the counts may be moving)."""
        with self._cond:
            session = self.sessions.get(session_id)
            if session is None:
                return None
            cache = session.cache
            seen = int(cache.tokens_seen.sum()) if cache.tokens_seen.numel() else 0
            evicted = int(cache.evicted.sum()) if cache.evicted.numel() else 0
            return {"ids": list(session.consumed), "tokens_seen": seen, "evicted": evicted,
                    "sinks": min(seen, cache.config.num_sinks), "window": cache.config.window,
                    "memory_bytes": cache.nbytes(), "busy": session.busy}

    def busy(self) -> bool:
        """True while any job is waiting or running."""
        with self._cond:
            return bool(self.waiting or self.active)

    def abort_all(self, reason: str = "abort") -> None:
        """End every waiting and active job now; each unfinished choice gets a final event with ``reason``."""
        with self._cond:
            for job in list(self.waiting) + list(self.active):
                job.abort_reason = reason
                job.cancel()
            self._cond.notify_all()

    def submit(self, job: Job) -> Job:
        return self.submit_all([job])[0]

    def submit_all(self, jobs: list[Job]) -> list[Job]:
        """Queue ``jobs`` together (a batched request) or none of them.

        Raises Unavailable while draining, RequestTooLarge when they exceed the whole queue, QueueFull when the queue
        has no room for them now.
        """
        with self._cond:
            if self._stop or self._draining:
                raise Engine.Unavailable("the server is shutting down and takes no new requests")
            if len(jobs) > self.max_queue:
                raise Engine.RequestTooLarge(f"{len(jobs)} prompts in one request, more than this server's queue of "
                                             f"{self.max_queue} (--max-queue) can ever hold")
            if len(self.waiting) + len(jobs) > self.max_queue:
                raise Engine.QueueFull(f"{len(self.waiting)} requests are already queued; try again later")
            self.waiting.extend(jobs)
            self._cond.notify_all()
        return jobs

    def run(self, job: Job) -> Job:
        """Run ``job`` to its end in the calling thread (in-process use, without :meth:`start`)."""
        if self._thread is not None:
            raise RuntimeError("the engine's worker thread is running: submit() jobs instead")
        try:
            self._prepare(job)
            with torch.no_grad():
                while not self._step(job):
                    pass
            if job.error is not None:
                error, job.error = job.error, None
                raise error
        except Exception as exc:
            self._finish(job, error=exc)
            raise
        self._finish(job)
        return job

    def health(self, tenant: str | None = None) -> dict:
        """The engine's state and counters: all of them, or (``tenant``, an API key's namespace) only that key's own
        jobs, sessions and counters, so that no key can watch another's traffic."""
        with self._cond:
            self.sessions.evict(self._job_cache_by_tenant())
            static = {"threads": torch.get_num_threads(), "draining": self._draining, "keep_max": self.keep_max,
                      "prefill_chunk": self.config.chunk, "decode": self._decode_path()}
            if tenant is None:
                return {"active": len(self.active), "queued": len(self.waiting), "sessions": len(self.sessions),
                        **static, "session_memory_mb": round(self.sessions.memory_bytes() / 2**20, 2), **self.stats}
            return {"active": sum(j.tenant == tenant for j in self.active),
                    "queued": sum(j.tenant == tenant for j in self.waiting), "sessions": self.sessions.count(tenant),
                    **static, "session_memory_mb": round(self.sessions.memory_bytes(tenant) / 2**20, 2),
                    "sessions_evicted": self.sessions.evicted_by_tenant.get(tenant, 0),
                    **self.tenant_stats.get(tenant, dict.fromkeys(_PER_REQUEST, 0))}

    def _decode_path(self) -> dict:
        """How decode steps run: "compiled" (one row through the compiled graph, batches eagerly) or "eager"."""
        if self.decoder is None:
            return {"mode": "eager"}
        return {"mode": "compiled", "compile_seconds": round(self.decoder.compile_seconds or 0.0, 1),
                "artefacts": str(self.decoder.directory)}

    # -- worker ----------------------------------------------------------------------------
    def _admit(self) -> None:
        """Move waiting jobs to active (FIFO), skipping jobs whose session is busy with another job."""
        busy = {j.session_id for j in self.active if j.session_id is not None}
        for job in list(self.waiting):
            if len(self.active) >= self.max_active:
                break
            if job.cancelled.is_set():
                self.waiting.remove(job)
                self._end_aborted(job)
                self._finish(job, cancelled=True)
                continue
            if job.session_id is not None and job.session_id in busy:
                continue
            self.waiting.remove(job)
            try:
                self._prepare(job)
            except Exception as exc:  # noqa: BLE001 - reported to the request, the engine keeps running
                self._finish(job, error=exc)
                continue
            self.active.append(job)
            job.prefill_turn = self._round - 1  # queued behind the prompts already being read: turns rotate
            if job.session_id is not None:
                busy.add(job.session_id)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stop and not self.waiting and not self.active:
                    self.sessions.evict(self._job_cache_by_tenant())  # idle sessions past their TTL go even when idle
                    self._cond.wait(timeout=1.0)
                if self._stop and not self.active and not self.waiting:
                    return
                self._admit()
                jobs = list(self.active)
            decoding, reading = [], []
            for job in jobs:
                if job.cancelled.is_set():
                    self._end_aborted(job)
                    self._finish(job, cancelled=True)
                    continue
                (reading if job.pending else decoding).append(job)
            if reading:
                self._prefill_round(reading)
            if decoding:
                self._decode_round(decoding)
            self._round += 1

    def _prefill_round(self, jobs: list[Job]) -> None:
        """Feed prefill chunks to ``jobs``, least recently served (or admitted) first, ``prefill_chunk`` tokens in all
        (the last chunk cut to fit), so the round's decode step is never held back by more than one chunk of prefill
        and a long prompt is not starved by new ones."""
        left = self.config.chunk
        for job in sorted(jobs, key=lambda j: j.prefill_turn):  # stable: FIFO among equals
            if left <= 0:
                break
            size = min(len(job.pending), left)
            left -= size
            job.prefill_turn = self._round
            try:
                with torch.no_grad():
                    self._prefill_step(job, size)
            except Exception as exc:  # noqa: BLE001 - reported to the request, the engine keeps running
                self._finish(job, error=exc)

    def _observe(self, kind: str, seconds: float) -> None:
        if self.observer is not None:
            self.observer(kind, seconds)

    def _end_aborted(self, job: Job) -> None:
        """A job ended by :meth:`abort_all` closes each unfinished choice with a final event (not a silent cut)."""
        if job.abort_reason is None:
            return
        if not job.choices:
            job.choices = [Choice(cache=None)]
        for index, choice in enumerate(job.choices):
            if choice.finish_reason is None:
                self._emit(job, index, choice, job.abort_reason)
        for index in range(len(job.choices), job.params.n):
            job.emit(index, "", job.abort_reason, [])

    def _job_cache_by_tenant(self) -> dict[str, int]:
        """Cache memory held by active jobs outside the session store (stateless caches and forked choices), per
        API key."""
        held: dict[str, int] = {}
        for job in self.active:
            for c in job.choices:
                if c.cache is not None and (job.session is None or c.cache is not job.session.cache):
                    held[job.tenant] = held.get(job.tenant, 0) + c.cache.nbytes()
        return held

    def _job_cache_bytes(self) -> int:
        return sum(self._job_cache_by_tenant().values())

    def _count(self, job: Job, key: str, n: int = 1) -> None:
        self.stats[key] += n
        mine = self.tenant_stats.setdefault(job.tenant, dict.fromkeys(_PER_REQUEST, 0))
        mine[key] += n

    def _finish(self, job: Job, cancelled: bool = False, error: BaseException | None = None) -> None:
        with self._cond:
            if job in self.active:
                self.active.remove(job)
            if job.session is not None:
                if cancelled or error is not None:
                    self.sessions.drop(job.session_id)  # half-fed: never reuse a cache in an unknown state
                else:
                    self.sessions.release(job.session, self._job_cache_by_tenant())
            self.sessions.evict(self._job_cache_by_tenant())
            key = "failed" if error is not None else ("cancelled" if cancelled else "completed")
            self._count(job, key)
            job.error = error
            self._cond.notify_all()
        job.done.set()
        job.on_done()

    # -- one job -----------------------------------------------------------------------------
    def _new_cache(self, keep: int = 0) -> SinkCache:
        """A cache whose sinks are the configured ones or, with ``keep`` (capped at ``keep_max``), the first ``keep``
        tokens: the conversation's system prompt then stays in the cache however long the chat gets."""
        config = self.config
        sinks = max(config.num_sinks, min(keep, self.keep_max))
        if sinks != config.num_sinks:
            rebase = None if config.rebase_at is None else max(config.rebase_at, sinks + 2 * config.window)
            config = dataclasses.replace(config, num_sinks=sinks, rebase_at=rebase, prefill_chunk=config.chunk)
        # Room for one prefill chunk at first; it doubles as tokens arrive (memory follows what a session holds).
        return SinkCache(config=config, initial_capacity=config.chunk)

    def _embed_images(self, job: Job) -> None:
        from tenfold.serve.images import image_key

        if self.vision is None:
            raise ValueError("this model does not take images")
        found = self.vision.count_images(job.prompt_ids)
        if found != len(job.images):
            raise ValueError(f"the prompt has {found} image placeholder(s) but {len(job.images)} image(s)")
        with torch.no_grad():
            feats = self.vision.encode_images(self.vision.pixel_values(job.images))
            ids = torch.tensor([job.prompt_ids], device=self.model.device)
            job.embeds = self.vision.embed(ids, feats)[0].to(self.model.dtype)
        keys, slot = [], 0
        for t in job.prompt_ids:
            if t == self.vision.image_token_id:
                keys.append(image_key(job.images[slot // self.vision.image_tokens]))
                slot += 1
            else:
                keys.append(t)
        job.keys = keys

    def _prepare(self, job: Job) -> None:
        if job.images:
            self._embed_images(job)
        cache = None
        if job.session_id is not None:
            session = self.sessions.acquire(job.session_id, lambda: self._new_cache(job.keep), job.tenant)
            job.session = session
            seen = session.consumed
            if seen and len(job.keys) > len(seen) and job.keys[: len(seen)] == seen:
                job.reused = len(seen)
                self._count(job, "session_hits")
            else:
                if seen:
                    self._count(job, "session_misses")
                session.cache = self._new_cache(job.keep)  # a fresh history: its own system prompt may be kept
                session.consumed = []
            cache = session.cache
        job.pending = job.keys[job.reused :]
        job.fed = job.reused
        job.choices = [Choice(cache=cache if cache is not None else self._new_cache(job.keep),
                              constraint=job.params.constraint() if job.params.constraint else None)]
        self._count(job, "prompt_tokens_reused", job.reused)

    def _feed(self, choice: Choice, ids: list[int] | None = None, embeds: torch.Tensor | None = None,
              all_logits: bool = False) -> torch.Tensor:
        """Feed tokens (or embeddings) through the choice's cache; return the logits kept ((1, V), or (q, V))."""
        inputs = ({"input_ids": torch.tensor([ids], device=self.model.device)} if embeds is None
                  else {"inputs_embeds": embeds[None]})
        out = self.model(**inputs, cache=choice.cache, use_cache=True, logits_to_keep=0 if all_logits else 1)
        choice.logits = out.logits[0, -1]
        return out.logits[0]

    def _score_prompt(self, job: Job, chunk: list[int], logits: torch.Tensor) -> None:
        """Prompt logprobs: each token scored by the logits before it (the first prompt token has none)."""
        k = job.params.logprobs or 0
        if not job.prompt_logprobs:
            job.prompt_logprobs.append((chunk[0], None, []))
            job.previous_logits = None
        targets = chunk if job.previous_logits is not None else chunk[1:]
        rows = logits[: len(chunk) - 1] if job.previous_logits is None else torch.cat(
            [job.previous_logits[None], logits[: len(chunk) - 1]])
        for token, row in zip(targets, rows):
            job.prompt_logprobs.append(score(row, token, k))
        job.previous_logits = logits[-1]

    def _step(self, job: Job) -> bool:
        """Do one unit of work for ``job`` alone (a prefill chunk or one token per choice); True when it has ended."""
        if job.pending:
            self._prefill_step(job)
            return False
        self._decode_round([job], finish=False)
        return job.error is not None or all(c.finish_reason is not None for c in job.choices)

    def _prefill_step(self, job: Job, size: int | None = None) -> None:
        """Feed the next prefill chunk (``size`` tokens, at most ``prefill_chunk``) of ``job``'s prompt; after the
        last one, fork its ``n`` choices."""
        size = self.config.chunk if size is None else max(1, min(size, self.config.chunk))
        chunk, job.pending = job.pending[:size], job.pending[size:]
        if job.embeds is None:
            logits = self._feed(job.choices[0], chunk, all_logits=job.params.prompt_logprobs)
            if job.params.prompt_logprobs:
                self._score_prompt(job, chunk, logits)
        else:
            self._feed(job.choices[0], embeds=job.embeds[job.fed : job.fed + len(chunk)])
        job.fed += len(chunk)
        self._count(job, "prompt_tokens_fed", len(chunk))
        if job.session is not None:
            job.session.consumed.extend(chunk)
        if not job.pending and job.params.n > 1:
            self._fork(job)

    def _decode_round(self, jobs: list[Job], finish: bool = True) -> None:
        """One token for every unfinished choice of ``jobs``: sample and emit each, then feed them all in one forward.

        A job whose sampling fails ends with its error alone; a failed forward ends every job in it (their caches
        took half a step). ``finish``: end finished jobs here (the worker) or leave that to the caller (:meth:`run`).
        """
        rows = []  # (job, index, choice, token) to feed
        for job in jobs:
            try:
                for index, choice in enumerate(job.choices):
                    if choice.finish_reason is None:
                        token = self._sample_one(job, index, choice)
                        if token is not None:
                            rows.append((job, index, choice, token))
            except Exception as exc:  # noqa: BLE001 - reported to the request, the engine keeps running
                rows = [r for r in rows if r[0] is not job]
                self._fail(job, exc, finish)
        if rows:
            try:
                with torch.no_grad():
                    # compiled: a lone row whose cache has grown to full size (the memory bound counted it)
                    if len(rows) == 1 and self.decoder is not None and self.decoder.can_compile(rows[0][2].cache,
                                                                                                grow=False):
                        logits = self.decoder.step(rows[0][2].cache, torch.tensor([rows[0][3]]))
                        self.stats["compiled_steps"] += 1
                    else:
                        logits = decode_rows(self.model, [r[2].cache for r in rows], [r[3] for r in rows])
                self.stats["decode_steps"] += 1
                self.stats["decoded_rows"] += len(rows)
                self.stats["max_batch_rows"] = max(self.stats["max_batch_rows"], len(rows))
            except Exception as exc:  # noqa: BLE001
                for job in dict.fromkeys(r[0] for r in rows):
                    self._fail(job, exc, finish)
                return
            for (job, index, choice, token), row in zip(rows, logits):
                choice.logits = row
                if index == 0 and job.session is not None:
                    job.session.consumed.append(token)
        if finish:
            for job in jobs:
                if job.error is None and not job.done.is_set() and all(c.finish_reason is not None
                                                                       for c in job.choices):
                    self._finish(job)

    def _fail(self, job: Job, exc: BaseException, finish: bool) -> None:
        if finish:
            if not job.done.is_set():
                self._finish(job, error=exc)
        else:
            job.error = exc

    def _fork(self, job: Job) -> None:
        """The prompt is shared by the ``n`` choices: copy its filled cache rows (never the pre-allocated room) for
        choices 1..n-1, after making room for them under the memory bound.

        Raises :class:`RequestTooLarge` when the copies could never fit, :class:`OutOfCacheMemory` when they do not
        fit now (other requests hold the memory); neither evicts anything.
        """
        first = job.choices[0]
        copies = [first.cache.copy()]
        needed = (job.params.n - 1) * copies[0].nbytes()
        bound = self.sessions.quota_bytes  # this key's share (all of it without keys)
        if needed + first.cache.nbytes() > bound:
            raise Engine.RequestTooLarge(
                f"n={job.params.n} needs {(needed + first.cache.nbytes()) / 2**20:.1f} MB of cache for this prompt, "
                f"more than this key's whole share of {bound / 2**20:.1f} MB (--session-memory-mb); ask for fewer "
                "choices or a shorter prompt")
        with self._cond:
            fits = self.sessions.make_room(needed, self._job_cache_by_tenant(), job.tenant)
        if not fits:
            raise Engine.OutOfCacheMemory(
                f"n={job.params.n} needs {needed / 2**20:.1f} MB more cache memory, and other requests hold the rest "
                f"of this key's {bound / 2**20:.1f} MB share now; try again later")
        copies += [first.cache.copy() for _ in range(job.params.n - 2)]
        for cache in copies:
            job.choices.append(Choice(cache=cache, logits=first.logits.clone(),
                                      constraint=job.params.constraint() if job.params.constraint else None))

    def _sample_one(self, job: Job, index: int, choice: Choice) -> int | None:
        """Sample choice ``index``'s next token and emit what is final; return the token to feed, or None when the
        choice ended (a stop token or string, a complete grammar, ``max_tokens``)."""
        p = job.params
        logits = choice.logits if choice.constraint is None else choice.constraint.mask(choice.logits)
        early = len(choice.ids) < p.min_tokens
        if early:
            logits = self._without_stop_tokens(logits)
        if choice.sampling is None:
            choice.sampling = job.sampler.start(job.prompt_ids)
        token = choice.sampling.sample(logits, job.generator)
        now = time.perf_counter()
        if job.first_token_at is None:
            job.first_token_at = now
            self._observe("ttft", now - job.submitted)
        elif choice.last_token_at is not None:
            self._observe("itl", now - choice.last_token_at)
        choice.last_token_at = now
        if token in self.stop_ids:
            self._emit(job, index, choice, "stop")
            return None
        choice.ids.append(token)
        choice.sampling.accept(token)
        if choice.constraint is not None:
            choice.constraint.consume(token)
        if p.logprobs is not None:
            choice.logprobs.append(score(choice.logits, token, p.logprobs))
        text = self.tok.decode(choice.ids, skip_special_tokens=True)
        if p.logprobs is not None:
            choice.ends.append(len(text))
        reason = None
        at = None if early else first_stop(text, p.stop, final=len(choice.ids) >= p.max_tokens)
        if at is not None:
            text, reason, choice.cut = text[:at], "stop", True
        choice.text = text
        if reason is None and choice.constraint is not None and choice.constraint.finished:
            reason = "stop"  # the grammar is complete: nothing more may follow
        if reason is None and len(choice.ids) >= p.max_tokens:
            reason = "length"
        self._emit(job, index, choice, reason)
        return token if reason is None else None

    def _without_stop_tokens(self, logits: torch.Tensor) -> torch.Tensor:
        """(V,) ``logits`` with the end-of-sequence tokens masked (``min_tokens`` not reached yet); unchanged when
        nothing else is allowed (a grammar that may only end)."""
        ids = [i for i in self.stop_ids if i is not None and 0 <= i < logits.shape[-1]]
        masked = logits.clone()
        masked[ids] = float("-inf")
        return masked if bool(torch.isfinite(masked).any()) else logits

    @staticmethod
    def _scored(choice: Choice, upto: int | None) -> int:
        """How many of the choice's scored tokens belong to the text sent: while generating (``upto``: characters
        sent), the tokens wholly inside it; at the end, every token, or after a stop-string cut only those that
        start before the cut (the cut token is not part of the answer, so neither is its log-probability)."""
        n = len(choice.logprobs)
        if not n or not choice.ends:
            return n
        if upto is not None:
            return min(n, bisect.bisect_right(choice.ends, upto))
        if not choice.cut:
            return n
        cut = len(choice.text)
        return 0 if cut == 0 else min(n, 1 + bisect.bisect_left(choice.ends, cut, 0, n - 1))

    def _emit(self, job: Job, index: int, choice: Choice, reason: str | None) -> None:
        """Send the text that is final: hold back a trailing partial character or a possible stop-string prefix."""
        upto = len(choice.text)
        if reason is None:
            if choice.text.endswith("\ufffd"):
                upto = len(choice.text.rstrip("\ufffd"))
            hold = max((len(s) - 1 for s in job.params.stop), default=0)
            upto = min(upto, len(choice.text) - hold)
        choice.finish_reason = reason
        if upto > choice.sent or reason is not None:
            delta = choice.text[choice.sent : max(upto, choice.sent)]
            choice.sent = max(upto, choice.sent)
            scored = self._scored(choice, upto if reason is None else None)
            entries = choice.logprobs[choice.logprobs_sent : scored]
            choice.logprobs_sent = max(choice.logprobs_sent, scored)
            job.emit(index, delta, reason, entries)
