"""Running registered experiments and writing their result records (design.md, "Results")."""
from __future__ import annotations

import json
import math
import os
import time
import traceback
from pathlib import Path

from tenfold import provenance
from tenfold.errors import TenfoldError
from tenfold.report.registry import PROFILES, VERDICTS, Experiment, Run


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
              "profile": profile, "settings": run.settings, "plots": run.plots}
    started = provenance.now()
    provenance.seed_everything(SEED)
    with provenance.collect() as models:
        start = time.perf_counter()
        record.update(_outcome(exp, run))
        record["runtime_s"] = round(time.perf_counter() - start, 2)
    try:
        described = provenance.describe_models(models)
    except OSError as exc:  # a weight file vanished or is unreadable: say so, keep the result
        described = [{**m, "weights": [], "error": str(exc)} for m in models]
    seeds = {"global": SEED, **{k: v for k, v in run.settings.items() if "seed" in k.lower()}}
    record["env"] = provenance.environment(models=described, seeds=seeds, started=started)
    write_json(results / f"{exp.name}.json", record)
    return record


def _outcome(exp: Experiment, run: Run) -> dict:
    """What the experiment found, or how it failed."""
    try:
        outcome = exp.fn(run)
        if not isinstance(outcome, dict) or outcome.get("verdict") not in VERDICTS:
            raise TenfoldError(f"experiment returned no valid verdict (one of {', '.join(VERDICTS)})")
        return {"status": "ok", "ours": outcome.get("ours", {}), "verdict": outcome["verdict"],
                "why": outcome.get("why", "")}
    except Exception as exc:  # noqa: BLE001 - a failing experiment must not stop the others
        return {"status": "failed", "ours": {}, "verdict": "failed", "why": f"{type(exc).__name__}: {exc}",
                "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}


def run_experiments(experiments: list[Experiment], profile: str, out_dir: str, show_progress: bool = True) -> list[dict]:
    """Run experiments in order with a progress bar, then rebuild ``out_dir/index.html``."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from tenfold.report.html import build_report

    if profile not in PROFILES:
        raise TenfoldError(f"unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
    (Path(out_dir) / "results").mkdir(parents=True, exist_ok=True)
    records = []
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), TextColumn("{task.fields[note]}"), disable=not show_progress,
                  transient=False) as bar:
        task = bar.add_task("reproduce", total=len(experiments), note="")
        for exp in experiments:
            bar.update(task, description=exp.name, note="")
            rec = run_one(exp, profile, out_dir, progress=lambda m: bar.update(task, note=m))
            records.append(rec)
            bar.update(task, advance=1, note=f"{rec['verdict']} ({rec['runtime_s']:.0f}s)")
    build_report(out_dir)
    return records
