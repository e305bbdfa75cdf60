"""Running a probe suite against a backend: concurrency, a rate limit, retries, and a resumable answer cache.

Every answer is appended to ``answers.jsonl`` in the run directory as soon as it arrives, keyed by a hash of the
backend's name, the techniques and the exact messages sent; a rerun (or a run that was interrupted) asks only what
is not there yet. A request that keeps failing (time-outs, connection errors, 5xx / 429, replies without text) is
retried ``retries`` times with exponential back-off and then recorded as an error - it counts as wrong, is reported
as an error, and is asked again on the next run; the other samples go on.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.lmm.backends import BackendError
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

    def wait(self) -> None:
        with self._lock:
            now = time.monotonic()
            start = max(now, self.next)
            self.next = start + self.gap
        if start > now:
            time.sleep(start - now)


def ask_with_retries(backend, messages, max_tokens: int, retries: int, limit: RateLimit, backoff: float = 0.5):
    """The backend's answer, retrying :class:`BackendError` (and time-outs) up to ``retries`` times."""
    delay = backoff
    for attempt in range(retries + 1):
        limit.wait()
        try:
            answer = backend.answer(messages, max_tokens)
            if not isinstance(answer, str):
                raise BackendError(f"the backend returned {type(answer).__name__}, not text")
            return answer
        except (BackendError, TimeoutError) as exc:
            if attempt == retries:
                raise BackendError(f"gave up after {retries + 1} attempts: {exc}") from None
            time.sleep(delay)
            delay *= 2


def run_suite(suite, base: str | Path, backend, out_dir: str | Path, techniques=(), max_tokens: int = 32,
              concurrency: int = 4, rate: float | None = None, retries: int = 2, judge=None,
              progress=None) -> list[Result]:
    """Ask every sample of ``suite`` (images relative to ``base``); results in suite order."""
    if concurrency < 1 or retries < 0 or max_tokens < 1:
        raise TenfoldError("concurrency and max_tokens must be >= 1 and retries >= 0")
    cache = AnswerCache(Path(out_dir) / CACHE)
    limit = RateLimit(rate)
    jobs = [(s, build_messages(s, base, techniques)) for s in suite.samples]
    results: list[Result | None] = [None] * len(jobs)

    def one(i: int) -> Result:
        sample, messages = jobs[i]
        key = request_key(backend.name, techniques, messages, max_tokens)
        answer, cached, error = cache.get(key), True, None
        if answer is None:
            cached = False
            try:
                answer = ask_with_retries(backend, messages, max_tokens, retries, limit)
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

    done = 0
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = {pool.submit(one, i): i for i in range(len(jobs))}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            done += 1
            if progress:
                progress(done, len(jobs))
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
