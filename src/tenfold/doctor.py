"""``tenfold doctor``: what a newcomer (or a bug report) needs first when something fails.

Versions (tenfold and its commit, Python, the key libraries), the machine and its threads, where the caches are
and how big, whether the bundled model and the corpora are in place, the offline settings, and whether model-written
code runs isolated. Every check only looks: nothing is fetched, converted or written.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tenfold import provenance
from tenfold.errors import TenfoldError

CORPORA = ("austen", "calendar", "fortunes-zh")


def _size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _home() -> Path:
    return Path(os.environ.get("TENFOLD_HOME") or Path.home() / ".cache" / "tenfold")


def _model() -> dict:
    from tenfold.models.embedder import bundled_embedder_dir
    from tenfold.models.lm import DEFAULT_LM, bundled_gguf, cached_dir, is_cached

    out = {"name": DEFAULT_LM}
    try:
        out["gguf"] = str(bundled_gguf())
    except TenfoldError as exc:
        out["gguf"], out["problem"] = None, f"{exc}"
    out["converted"] = is_cached()
    out["cache"] = str(cached_dir())
    try:
        out["embedder"] = str(bundled_embedder_dir())
    except TenfoldError as exc:
        out["embedder"], out["problem"] = None, f"{exc}"
    return out


def _isolation() -> dict:
    try:
        from tenfold import sandbox

        status = getattr(sandbox, "isolation_status", None)
        if status is not None:
            return status()
    except Exception as exc:  # noqa: BLE001 - doctor reports, it does not fail
        return {"isolation": "unknown", "available": False, "reason": f"{type(exc).__name__}: {exc}"}
    bwrap = shutil.which("bwrap")
    return {"isolation": "guard", "available": False, "bwrap": bwrap,
            "reason": "this tenfold runs model-written code under its in-process guard"}


def _compiled() -> dict:
    """Whether a compiled decode step can be built here (a C++ compiler), the CPU's vector level, and the steps
    already compiled under ``$TENFOLD_HOME/compiled`` (model, weights, cache size, torch, CPU level, bytes)."""
    import torch

    from tenfold.streaming.compiled import cached_artefacts, compiler

    return {"compiler": compiler(), "vector_level": torch.backends.cpu.get_cpu_capability(),
            "cached": cached_artefacts()}


def report() -> dict:
    """Everything ``tenfold doctor`` shows, and ``problems``: what to fix (empty when all is in place)."""
    home = _home()
    caches = {}
    if home.is_dir():
        for sub in sorted(p for p in home.iterdir() if p.is_dir()):
            caches[sub.name] = _size(sub)
    corpora = {name: (home / "data" / name).is_dir() and any((home / "data" / name).iterdir()) for name in CORPORA}
    model = _model()
    problems = []
    if model.get("problem"):
        problems.append(model["problem"])
    elif not model["converted"]:
        problems.append("the bundled model is not converted yet: `tenfold data prepare` (once, ~20 s)")
    missing = [name for name, ok in corpora.items() if not ok]
    if missing:
        problems.append(f"corpora not fetched yet: {', '.join(missing)}: `tenfold data prepare`")
    libraries = provenance.libraries()
    problems += [f"{lib} is not installed" for lib in ("torch", "transformers") if not libraries.get(lib)]
    return {"tenfold": provenance.code_version(), "python": provenance.environment()["python"], "libraries": libraries,
            "machine": provenance.machine(), "threads": provenance.threads(),
            "offline": {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME")},
            "home": {"path": str(home), "bytes": caches}, "model": model, "corpora": corpora,
            "sandbox": _isolation(), "compiled": _compiled(), "problems": problems}


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def render(r: dict) -> str:
    code = r["tenfold"]
    commit = (f"commit {code['commit'][:10]}{' + uncommitted changes' if code['dirty'] else ''}" if code["commit"]
              else "installed package")
    libs = ", ".join(f"{k} {v}" for k, v in r["libraries"].items() if v)
    m, t = r["machine"], r["threads"]
    lines = [f"tenfold {code['version']} ({commit}) from {code['source']}",
             f"Python {r['python']['version']} ({r['python']['executable']})",
             f"libraries: {libs}",
             f"machine: {m['cpu']}, {m['logical_cpus']} CPUs ({m['physical_cores']} cores), {m['memory_gb']} GB, "
             f"load {m['load_avg_1m']}; torch threads {t['torch']} (OMP_NUM_THREADS={t['OMP_NUM_THREADS']})",
             f"offline: " + ", ".join(f"{k}={v}" for k, v in r["offline"].items()),
             f"cache: {r['home']['path']}" + (" (" + ", ".join(f"{k} {_mb(v)}" for k, v in r["home"]["bytes"].items())
                                               + ")" if r["home"]["bytes"] else " (empty)")]
    model = r["model"]
    lines.append(f"model: {model['name']}: GGUF {'found' if model['gguf'] else 'MISSING'}, "
                 f"{'converted' if model['converted'] else 'not converted'} ({model['cache']}); embedder "
                 f"{'found' if model['embedder'] else 'MISSING'}")
    lines.append("corpora: " + ", ".join(f"{k} {'ok' if v else 'MISSING'}" for k, v in r["corpora"].items()))
    s = r["sandbox"]
    lines.append(f"sandbox: {s.get('isolation')}" + (f" ({s['reason']})" if s.get("reason") else ""))
    c = r["compiled"]
    lines.append(f"compiled decode ({c['vector_level']}): " + (f"compiler {c['compiler']}" if c["compiler"] else
                                                      "no C++ compiler (chat and serve decode eagerly)")
                 + f"; {len(c['cached'])} kept" + "".join(
        f"\n  {Path(k['model']).name} {k['weights']} cache {k.get('cache_size', '?')}, torch {k['torch']}, {k['vector_level']}"
        f"{' (unreadable key.json)' if k.get('unreadable') else ''}"
        f"{', ' + ' '.join(f'{o}={v}' for o, v in k['options'].items()) if k.get('options') else ''}: "
        f"{_mb(k['bytes'])}"
        for k in c["cached"]))
    lines += [f"problem: {p}" for p in r["problems"]] or ["everything tenfold needs is in place"]
    return "\n".join(lines)
