"""Running registered experiments and writing their result records (design.md, "Results")."""
from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

from tenfold import provenance
from tenfold.errors import TenfoldError
from tenfold.report.registry import PROFILES, Experiment, Run
from tenfold.report.verdict import RULE, decide, rebuilt


def _clean(value):
    """JSON-safe copy: NaN/inf become None, numpy/torch scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, record: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(_clean(record), indent=2, allow_nan=False), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash never leaves a half-written result


MAX_WARNINGS = 20  # distinct warnings kept per result
SEED = 0  # every experiment starts from the same global generator state (each also seeds its own, recorded)


def run_one(exp: Experiment, profile: str, out_dir: str, progress=lambda message: None) -> dict:
    """Run one experiment; a failure is recorded (status 'failed', error line), never raised.

    The record says what produced it (``env``: :func:`tenfold.provenance.environment`): code version and commit,
    library versions, the models loaded with their weight hashes, seeds, threads and machine.
    """
    results = Path(out_dir) / "results"
    results.mkdir(parents=True, exist_ok=True)
    run = Run(profile=profile, out_dir=str(out_dir), name=exp.name, progress=progress)
    record = {"name": exp.name, "paper": exp.paper, "claim": exp.claim, "paper_numbers": exp.paper_numbers,
              "profile": profile, "settings": run.settings, "plots": run.plots, "scaled_down": run.scaled_down}
    from tenfold.report.fingerprint import fingerprint

    record["fingerprint"] = fingerprint(exp, profile)  # what decides the numbers: a later run may keep this result
    started = provenance.now()
    provenance.seed_everything(SEED)
    with provenance.collect() as models, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once per place it is raised from
        start = time.perf_counter()
        record.update(_outcome(exp, run))
        record["runtime_s"] = round(time.perf_counter() - start, 2)
    # Libraries' warnings go into the result, not across the progress lines: a reader can still see them there.
    record["warnings"] = list(dict.fromkeys(f"{w.category.__name__}: {w.message}" for w in caught))[:MAX_WARNINGS]
    try:
        described = provenance.describe_models(models)
    except OSError as exc:  # a weight file vanished or is unreadable: say so, keep the result
        described = [{**m, "weights": [], "error": str(exc)} for m in models]
    try:
        inputs = provenance.describe_inputs(models.inputs)
    except OSError as exc:
        inputs = [{"file": p, "error": str(exc)} for p in models.inputs]
    seeds = {"global": SEED, **{k: v for k, v in run.settings.items() if "seed" in k.lower()}}
    record["env"] = provenance.environment(models=described, inputs=inputs, seeds=seeds, started=started)
    write_json(results / f"{exp.name}.json", record)
    return record


def _outcome(exp: Experiment, run: Run) -> dict:
    """What the experiment found (the verdict by :func:`~tenfold.report.verdict.decide` from its checks), or how it
    failed. An experiment that returns no checks, or a verdict of its own, fails: every verdict rests on intervals."""
    try:
        outcome = exp.fn(run)
        if not isinstance(outcome, dict) or not outcome.get("checks"):
            raise TenfoldError("experiment returned no checks: a verdict needs each part of the claim measured with "
                               "an interval (tenfold.report.verdict.Check)")
        try:  # fresh checks, each status computed again: nothing an experiment hands back is taken at its word
            checks = rebuilt(outcome["checks"])
        except (TypeError, ValueError) as exc:
            raise TenfoldError(f"experiment returned bad checks: {exc}") from None
        if "verdict" in outcome:
            raise TenfoldError("experiment returned a verdict of its own; it returns checks and the shared rule "
                               "(tenfold.report.verdict.decide) gives the verdict")
        return {"status": "ok", "ours": outcome.get("ours", {}), "verdict": decide(checks),
                "why": outcome.get("why", ""), "checks": [c.record() for c in checks], "rule": RULE}
    except Exception as exc:  # noqa: BLE001 - a failing experiment must not stop the others
        return {"status": "failed", "ours": {}, "verdict": "failed", "why": f"{type(exc).__name__}: {exc}",
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}


class Plan:
    """The ETA of a reproduce run: each experiment still to run is expected to take what it took last time with this
    profile (:func:`~tenfold.report.fingerprint.expected_runtimes`); the one running counts down from its estimate."""

    def __init__(self, names: list[str], expected: dict[str, float]):
        self.names, self.expected, self.index, self.started = list(names), expected, 0, time.monotonic()

    def start(self, index: int) -> None:
        self.index, self.started = index, time.monotonic()

    def left_s(self) -> tuple[float, int]:
        """(seconds expected to be left, how many experiments still to run have no earlier runtime)."""
        if self.index >= len(self.names):
            return 0.0, 0
        current, later = self.names[self.index], self.names[self.index + 1:]
        unknown = sum(n not in self.expected for n in [current, *later])
        left = max(self.expected.get(current, 0.0) - (time.monotonic() - self.started), 0.0)
        return left + sum(self.expected.get(n, 0.0) for n in later), unknown

    def eta(self) -> str:
        left, unknown = self.left_s()
        if unknown and not left:
            return "ETA unknown (first run)"
        minutes = f"{left / 60:.0f} min" if left >= 90 else f"{left:.0f} s"
        return f"ETA {'>= ' if unknown else '~'}{minutes}" + (f" (+{unknown} never timed)" if unknown else "")


def run_experiments(experiments: list[Experiment], profile: str, out_dir: str, show_progress: bool = True,
                    force: bool = False) -> list[dict]:
    """Run experiments in order with a progress bar and an ETA, then rebuild ``out_dir/index.html``.

    A stored result is kept instead of re-running when it succeeded with the same fingerprint (profile, reachable
    code, libraries) and the same model weights (:func:`~tenfold.report.fingerprint.kept`); ``force`` re-runs all.
    So an interrupted run resumes where it stopped. Kept records come back with ``"kept": True``.
    """
    from rich.console import Console
    from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    from tenfold.report.fingerprint import expected_runtimes, kept, remember_runtime
    from tenfold.report.html import build_report

    if profile not in PROFILES:
        raise TenfoldError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    (Path(out_dir) / "results").mkdir(parents=True, exist_ok=True)
    stored = {} if force else {e.name: rec for e in experiments if (rec := kept(e, profile, out_dir)) is not None}
    to_run = [e for e in experiments if e.name not in stored]
    plan = Plan([e.name for e in to_run], expected_runtimes(profile))

    class Eta(ProgressColumn):
        def render(self, task):
            return Text(plan.eta(), style="cyan")

    records = []
    # Progress goes to stderr (stdout is for results). A log file or a CI console gets no live bar (rich would draw
    # only its last frame) but one line per experiment.
    console = Console(stderr=True)
    lines = show_progress and not console.is_terminal
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), Eta(), TextColumn("{task.fields[note]}"), console=console,
                  disable=not show_progress or lines, transient=False) as bar:
        task = bar.add_task("reproduce", total=len(to_run), note=f"{len(stored)} unchanged, kept" if stored else "")

        def say(message: str) -> None:
            print(message, file=sys.stderr, flush=True)

        if lines and stored:
            say(f"reproduce: {len(stored)} unchanged result(s) kept: {', '.join(stored)}")
        done = 0
        for exp in experiments:
            if exp.name in stored:
                records.append({**stored[exp.name], "kept": True})
                continue
            plan.start(done)
            bar.update(task, description=exp.name, note="")
            if lines:
                say(f"reproduce [{done + 1}/{len(to_run)}] {exp.name}: running, {plan.eta()}")
            rec = run_one(exp, profile, out_dir, progress=lambda m: bar.update(task, note=m))
            if rec["status"] == "ok":
                remember_runtime(profile, exp.name, rec["runtime_s"])
            records.append(rec)
            done += 1
            plan.start(done)
            bar.update(task, advance=1, note=f"{rec['verdict']} ({rec['runtime_s']:.0f}s)")
            if lines:
                noted = f" ({len(rec['warnings'])} warning(s) in its result file)" if rec.get("warnings") else ""
                say(f"reproduce [{done}/{len(to_run)}] {exp.name}: {rec['status']}, "
                    f"{rec.get('verdict')} in {rec['runtime_s']:.0f} s{noted}")
    build_report(out_dir)
    return records
