"""Running a probe suite against a backend: concurrency, a rate limit and a resumable answer cache (retries are
the backend's: the openai SDK's own, for HTTP backends).

Every answer is appended to ``answers.jsonl`` in the run directory as soon as it arrives, keyed by a hash of the
backend's name, the techniques and the exact messages sent; a rerun (or a run that was interrupted) asks only what
is not there yet. A request that keeps failing (time-outs, connection errors, 5xx / 429, replies without text) is
retried ``retries`` times with exponential back-off and then recorded as an error - it counts as wrong, is reported
as an error, and is asked again on the next run; the other samples go on.

Ctrl-C (any exception in the caller's thread) stops the run at once: no queued request is sent, back-off waits end,
and the workers are daemon threads, so a request already in flight does not hold the process (its answer, if it
comes, is not waited for). What was answered is in the cache for the next run.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.lmm.backends import BackendError, RequestCancelled
from tenfold.lmm.prompts import build_messages
from tenfold.lmm.scoring import score

CACHE = "answers.jsonl"


@dataclass
class Result:
    id: str
    category: str
    pointer: str | None
    techniques: list[str]
    answer: str | None
    correct: bool
    error: str | None = None
    cached: bool = False


def request_key(backend_name: str, techniques, messages: list[dict], max_tokens: int) -> str:
    blob = json.dumps([backend_name, sorted(techniques), max_tokens, messages], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


class AnswerCache:
    """Append-only JSONL of ``{"key", "answer"}``; a torn last line (a killed run) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.answers: dict[str, str] = {}
        self._lock = threading.Lock()
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                    self.answers[row["key"]] = row["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    def get(self, key: str) -> str | None:
        return self.answers.get(key)

    def put(self, key: str, answer: str) -> None:
        with self._lock:
            self.answers[key] = answer
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as fh:
                fh.write(json.dumps({"key": key, "answer": answer}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())


class RateLimit:
    """At most ``per_second`` request starts per second across threads (None: no limit)."""

    def __init__(self, per_second: float | None):
        if per_second is not None and not per_second > 0:
            raise TenfoldError("the rate limit must be a positive number of requests per second")
        self.gap = 0.0 if per_second is None else 1.0 / per_second
        self.next = 0.0
        self._lock = threading.Lock()

    def wait(self, stop: threading.Event | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.gap
        if start > now:
            (stop or threading.Event()).wait(start - now)


class Cancelled(Exception):
    """The run was stopped (Ctrl-C) before this request was sent."""


def ask(backend, messages, max_tokens: int, limit: RateLimit, stop: threading.Event | None = None) -> str:
    """The backend's answer to one request, after the rate limit allows it; once ``stop`` is set no request is
    sent (:class:`Cancelled`). Retrying is the backend's business (the openai SDK's, for HTTP backends)."""
    stop = stop or threading.Event()
    limit.wait(stop)
    if stop.is_set():
        raise Cancelled()
    try:
        answer = backend.answer(messages, max_tokens)
    except RequestCancelled:
        raise Cancelled() from None
    if not isinstance(answer, str):
        raise BackendError(f"the backend returned {type(answer).__name__}, not text")
    return answer


def run_suite(suite, base: str | Path, backend, out_dir: str | Path, techniques=(), max_tokens: int = 32,
              concurrency: int = 4, rate: float | None = None, judge=None, progress=None) -> list[Result]:
    """Ask every sample of ``suite`` (images relative to ``base``); results in suite order. A request that fails
    (after the backend's own retries) is that sample's ``error``; the run goes on."""
    if concurrency < 1 or max_tokens < 1:
        raise TenfoldError("concurrency and max_tokens must be >= 1")
    cache = AnswerCache(Path(out_dir) / CACHE)
    limit = RateLimit(rate)
    jobs = [(s, build_messages(s, base, techniques)) for s in suite.samples]
    results: list[Result | None] = [None] * len(jobs)
    stop = threading.Event()
    backend.stop = stop  # the backend refuses to send anything (its retries included) once the run stops

    def one(i: int) -> Result:
        sample, messages = jobs[i]
        key = request_key(backend.name, techniques, messages, max_tokens)
        answer, cached, error = cache.get(key), True, None
        if answer is None:
            cached = False
            try:
                answer = ask(backend, messages, max_tokens, limit, stop=stop)
                if stop.is_set():  # answered after Ctrl-C: nobody waits for it, and the cache is being left
                    raise Cancelled()
                cache.put(key, answer)
            except TenfoldError as exc:
                error = str(exc)
        correct = False
        if answer is not None:
            try:
                correct = score(sample, answer, judge)
            except TenfoldError as exc:
                error = str(exc)
        return Result(sample.id, sample.category, sample.pointer, list(techniques), answer, correct, error, cached)

    todo: queue.SimpleQueue = queue.SimpleQueue()
    for i in range(len(jobs)):
        todo.put(i)
    finished: queue.SimpleQueue = queue.SimpleQueue()

    def worker() -> None:
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            try:
                finished.put((i, one(i), None))
            except Cancelled:
                return
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread, raised there
                finished.put((i, None, exc))

    workers = [threading.Thread(target=worker, name=f"lmm-request-{k}", daemon=True)
               for k in range(min(concurrency, len(jobs)))]
    for t in workers:
        t.start()
    try:
        for done in range(1, len(jobs) + 1):
            while True:  # a short timeout keeps the wait responsive to Ctrl-C
                try:
                    i, result, exc = finished.get(timeout=0.2)
                    break
                except queue.Empty:
                    continue
            if exc is not None:
                raise exc
            results[i] = result
            if progress:
                progress(done, len(jobs))
    finally:
        stop.set()  # on Ctrl-C or an error: queued requests are never sent, back-off waits end
    return results


def accuracy_by(results: list[Result], field: str) -> dict[str, dict]:
    """{value: {"accuracy", "n", "errors"}} grouped by ``field`` ("category" or "pointer"; None values skipped)."""
    groups: dict[str, list[Result]] = {}
    for r in results:
        value = getattr(r, field)
        if value is not None:
            groups.setdefault(value, []).append(r)
    return {k: {"accuracy": round(sum(r.correct for r in v) / len(v), 3), "n": len(v),
                "errors": sum(r.error is not None for r in v)} for k, v in groups.items()}


def write_results(results: list[Result], out_dir: str | Path) -> Path:
    path = Path(out_dir) / "results.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(asdict(r)) + "\n" for r in results))
    return path
