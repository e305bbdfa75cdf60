"""When a result can be kept, and how long an experiment takes: what lets ``tenfold reproduce`` resume and skip.

A result is kept when its file says it succeeded with the same :func:`fingerprint` - the profile, the code the
experiment can reach, Python and the key libraries - and the model weights and corpus files it recorded still hash
the same.
"The code it can reach" is found from the source: the modules of the experiment's package and every tenfold module
they import, followed transitively (an edit to ``tenfold/ndp`` re-runs ``ndp`` only; one to ``tenfold/models/lm.py``
re-runs what loads a language model). ``tenfold.report`` itself is left out: it records, it does not compute.

Runtimes of earlier runs are kept in ``$TENFOLD_HOME/runtimes.json`` (per profile and experiment) for the ETA.
"""
from __future__ import annotations

import ast
import functools
import hashlib
import json
import os
import platform
from pathlib import Path

import tenfold
from tenfold import provenance

SRC = Path(tenfold.__file__).resolve().parent
NOT_COMPUTING = ("tenfold.report", "tenfold.provenance")  # they record results; changing them changes no number


def _file(module: str) -> Path | None:
    """The source file of a tenfold module (a package's ``__init__.py``), or None."""
    parts = module.split(".")
    if parts[0] != "tenfold":
        return None
    base = SRC.joinpath(*parts[1:])
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


@functools.lru_cache(maxsize=None)
def _imports(module: str) -> frozenset[str]:
    """The tenfold modules ``module`` imports, anywhere in it (at the top or inside functions), with the packages
    above them (their ``__init__`` runs too)."""
    path = _file(module)
    if path is None:
        return frozenset()
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "attach":  # lazy_loader exports
            for kw in node.keywords:
                if kw.arg == "submod_attrs" and isinstance(kw.value, ast.Dict):
                    names += [f"{module}.{k.value}" for k in kw.value.keys if isinstance(k, ast.Constant)]
        for name in names:
            parts = name.split(".")
            found.update(m for i in range(1, len(parts) + 1) if _file(m := ".".join(parts[:i])))
    return frozenset(found)


def reachable(module: str) -> list[str]:
    """Every tenfold module whose code can run for an experiment defined in ``module``: its whole package (CLI
    included: an experiment may run its own verbs in a subprocess) and what those import, transitively."""
    package = module.rsplit(".", 1)[0] if _file(module) and _file(module).name != "__init__.py" else module
    pkg_dir = _file(package).parent if _file(package) else SRC
    start = [f"{package}.{'.'.join(p.relative_to(pkg_dir).with_suffix('').parts)}".removesuffix(".__init__")
             for p in sorted(pkg_dir.rglob("*.py"))] if pkg_dir != SRC else [module]
    seen, todo = set(), [*start, "tenfold"]
    while todo:
        mod = todo.pop()
        if mod in seen or mod.startswith(NOT_COMPUTING):
            continue
        seen.add(mod)
        todo.extend(_imports(mod))
    return sorted(seen)


def code_hash(modules: list[str]) -> str:
    digest = hashlib.sha256()
    for mod in modules:
        path = _file(mod)
        if path is not None:
            digest.update(mod.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def fingerprint(exp, profile: str) -> dict:
    """What decides an experiment's numbers, short of running it."""
    from tenfold.devices import resolve_device

    modules = reachable(exp.fn.__module__)
    return {"profile": profile, "device": str(resolve_device(None)), "modules": len(modules), "code": code_hash(modules),
            "python": platform.python_version(),
            "libraries": hashlib.sha256(json.dumps(provenance.libraries(), sort_keys=True).encode()).hexdigest()}


def kept(exp, profile: str, out_dir: str | Path) -> dict | None:
    """The stored result of ``exp`` when it can stand for a new run (same fingerprint, same weights, plots present),
    else None."""
    path = Path(out_dir) / "results" / f"{exp.name}.json"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if record.get("status") != "ok" or record.get("fingerprint") != fingerprint(exp, profile):
        return None
    if not all((path.parent / plot).is_file() for plot in record.get("plots", [])):
        return None
    for data in (record.get("env") or {}).get("inputs", []):  # a corpus file changed (or gone): run again
        f = Path(data.get("file", ""))
        if not f.is_file() or provenance.file_sha256(f, _hash_cache()) != data.get("sha256"):
            return None
    for model in (record.get("env") or {}).get("models", []):
        root = Path(model["source"]) if model.get("source") else None
        for w in model.get("weights", []):
            f = root if root is not None and root.is_file() else (root / w["file"] if root else None)
            if f is None or not f.is_file() or provenance.file_sha256(f, _hash_cache()) != w["sha256"]:
                return None
    return record


@functools.lru_cache(maxsize=1)
def _hash_cache() -> dict:
    try:
        return json.loads(provenance._hash_cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _runtimes_path() -> Path:
    return Path(tenfold.home()) / "runtimes.json"


def expected_runtimes(profile: str) -> dict[str, float]:
    """Seconds each experiment took the last time it ran with ``profile`` (from earlier runs, on this machine)."""
    try:
        return json.loads(_runtimes_path().read_text(encoding="utf-8")).get(profile, {})
    except (OSError, ValueError):
        return {}


def remember_runtime(profile: str, name: str, seconds: float) -> None:
    path = _runtimes_path()
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        table = {}
    if not isinstance(table, dict) or not isinstance(table.get(profile, {}), dict):
        table = {}  # not what this function writes: start over rather than fail the run
    table.setdefault(profile, {})[name] = round(seconds, 1)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(table, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
