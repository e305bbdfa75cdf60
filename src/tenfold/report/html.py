"""The HTML report: one self-contained page (no CDN, plots inlined), one section per paper, rendered from the
jinja2 template ``templates/report.html.j2`` (autoescaped); this module prepares what the template shows."""
from __future__ import annotations

import base64
import datetime as _dt
import json
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.report.papers import PAPERS

CSS = """
body{font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1d1d1f}
h1{margin-bottom:0}.sub{color:#666;margin-top:.2em}
section{border-top:2px solid #e5e5e5;margin-top:2em;padding-top:.5em}
.exp{background:#fafafa;border:1px solid #e5e5e5;border-radius:8px;padding:.8em 1.2em;margin:1em 0}
table{border-collapse:collapse;font-size:13px;margin:.4em 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f0f0}.cols{display:flex;gap:2em;flex-wrap:wrap}.cols>div{flex:1;min-width:300px;overflow-x:auto}.cols>div:last-child{flex:2}td+td{overflow-wrap:anywhere}
.badge{display:inline-block;padding:1px 9px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.no-intervals{background:#9e9e9e}.reproduced{background:#2e7d32}.partly{background:#ef8f00}.not-reproduced{background:#c62828}.inconclusive{background:#5c6bc0}
.fullrun{background:#eef3fb;border-left:3px solid #5c6bc0;padding:.3em .6em;margin:.4em 0}.st-shown{color:#2e7d32;font-weight:600}.st-contradicted{color:#c62828;font-weight:600}.st-smaller-than-claimed{color:#ef8f00;font-weight:600}.st-undecided{color:#5c6bc0;font-weight:600}.failed{background:#555}.none{background:#9e9e9e}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}code,pre{font-size:12px;background:#f3f3f3}pre{padding:.5em;overflow:auto}
.muted{color:#777}.scaled{background:#fff7e0;border-left:3px solid #e0a800;padding:.3em .6em}.prov{font-size:13px;color:#444;margin-top:.4em}.prov code{overflow-wrap:anywhere}table.matrix{margin:0;overflow-wrap:normal}table.matrix th{white-space:nowrap}table.matrix td:not(:first-child){text-align:right;white-space:nowrap}
"""


def _is_stat(value) -> bool:
    """A summary over seeds: ``{"mean": .., "std": .., "runs": [..]}``, shown on one line."""
    return isinstance(value, dict) and {"mean", "std"} <= set(value) and set(value) <= {"mean", "std", "runs"}


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if _is_stat(value):
        runs = value.get("runs")
        return f"{_fmt(value['mean'])} ± {_fmt(value['std'])}" + (f" (runs: {_fmt(runs)})" if runs else "")
    if isinstance(value, dict):  # a long series, e.g. per turn: shown compactly
        text = ", ".join(f"{k}: {_fmt(v)}" for k, v in list(value.items())[:12])
        return f"{{{text}, ... ({len(value)})}}" if len(value) > 12 else f"{{{text}}}"
    if isinstance(value, (list, tuple)):
        text = ", ".join(_fmt(v) for v in value[:12])
        return f"[{text}{', ...' if len(value) > 12 else ''}] ({len(value)})" if len(value) > 12 else f"[{text}]"
    return str(value)


def _matrix_columns(value) -> list | None:
    """The column keys when ``value`` is a score matrix - rows (e.g. methods) that each map shared column keys
    (e.g. metrics) to plain values - shown as a small table with a header; otherwise None."""
    if not (isinstance(value, dict) and value and not _is_stat(value)):
        return None
    columns: list = []
    for row in value.values():
        if not isinstance(row, dict) or not row or _is_stat(row):
            return None
        for k, v in row.items():
            if isinstance(v, (dict, list, tuple)):
                return None
            if k not in columns:
                columns.append(k)
    shared = sum(len(row) for row in value.values()) / len(value)
    return columns if len(columns) >= 2 and len(columns) <= 12 and shared >= len(columns) / 2 else None


def _flatten(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    rows = []
    for k, v in d.items():
        key = f"{prefix}{k}"
        if _matrix_columns(v):
            rows.append((key, v))
        elif isinstance(v, dict) and v and not _is_stat(v) and len(_flatten(v)) <= 16:
            rows.extend(_flatten(v, key + "."))
        elif isinstance(v, dict) and not _is_stat(v) and 1 < len(v) <= 16:  # too deep: one row per child
            rows.extend((f"{key}.{k2}", v2) for k2, v2 in v.items())
        else:
            rows.append((key, v))
    return rows


def _measured(effect: dict) -> str:
    """A stored estimate's value as text, or "not measured" (NaN, stored as null)."""
    value = effect.get("value")
    return "not measured" if value is None or value != value else _fmt(value)


def _interval(effect: dict) -> str:
    """A stored estimate's interval as text: "exact", "none" (unbounded: too few samples) or "[low, high]"."""
    import math

    low, high = effect.get("low"), effect.get("high")
    if low is None or high is None or not math.isfinite(low) or not math.isfinite(high):  # stored as null
        return "none"
    return "exact" if str(effect.get("method", "")).startswith("exact") else f"[{_fmt(float(low))}, {_fmt(float(high))}]"


def _weight_files(model: dict) -> list[dict]:
    """A model's weight files for the provenance table, the GGUF it was converted from included."""
    origin = model.get("origin")
    converted = [{**origin, "file": f"converted from {origin['file']}"}] if isinstance(origin, dict) else []
    return [*model.get("weights", []), *converted]


def _provenance_line(env: dict) -> str:
    code, libs = env.get("tenfold", {}), env.get("libraries", {})
    commit = code.get("commit")
    where = (f"commit {commit[:10]}{' + uncommitted changes' if code.get('dirty') else ''}" if commit
             else "not a git checkout")
    models = ", ".join(f"{m['id']} ({m['weights'][0]['sha256'][:12]}...)" if m.get("weights") else m["id"]
                       for m in env.get("models", [])) or "none"
    machine, threads = env.get("machine", {}), env.get("threads", {})
    return (f"tenfold {code.get('version')} ({where}); Python {env.get('python', {}).get('version')}, "
            f"torch {libs.get('torch')}, transformers {libs.get('transformers')}; models: {models}; "
            f"seeds {_fmt(env.get('seeds', {}))}; torch threads {threads.get('torch')}; "
            f"{machine.get('cpu')} ({machine.get('logical_cpus')} CPUs)")


def load_records(out_dir: str | Path) -> list[dict]:
    """The result records of ``out_dir/results/*.json``, each verdict re-derived from its checks by today's rule
    (:func:`_reapplied`); an unreadable file becomes a failed record naming it."""
    results = Path(out_dir) / "results"
    records = []
    for path in sorted(results.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            record = None
        if not isinstance(record, dict):
            records.append({"name": path.stem, "paper": "?", "status": "failed", "verdict": "failed",
                            "why": f"unreadable result file {path.name}"})
            continue
        records.append(_reapplied(record, path.name))
    return records


_TYPES = {"runtime_s": (int, float), "env": dict, "settings": dict, "ours": dict, "paper_numbers": dict,
          "scaled_down": list, "plots": list, "warnings": list, "name": str, "paper": str, "claim": str, "why": str,
          "profile": str}


def _well_typed(record: dict) -> dict:
    """``record`` with every field the page reads of the type it expects (a hand-edited or foreign result file must
    not break the whole report): a field of another type is dropped, a list keeps its text items."""
    out = dict(record)
    for key, kind in _TYPES.items():
        if key in out and (not isinstance(out[key], kind) or isinstance(out[key], bool)):
            out.pop(key)
    for key in ("scaled_down", "plots", "warnings"):
        if key in out:
            out[key] = [x for x in out[key] if isinstance(x, str)]
    if "env" in out:
        env = out["env"]
        kinds = {"tenfold": dict, "libraries": dict, "seeds": dict, "threads": dict, "machine": dict, "python": dict,
                 "models": list, "inputs": list, "started": str}
        env = {k: v for k, v in env.items() if k in kinds and isinstance(v, kinds[k])}
        for key in ("models", "inputs"):
            if key in env:
                env[key] = [m for m in env[key] if isinstance(m, dict)]
        out["env"] = env
    return out


def _reapplied(record: dict, fname: str) -> dict:
    """``record`` with its checks' statuses and its verdict computed again from the stored estimates by the current
    rule (:func:`tenfold.report.verdict.decide`): a result file's own words are never taken for a verdict, and
    results kept from an earlier version of the rule are read by today's. Checks that cannot be read make the
    record a failed one that says so."""
    from tenfold.report.verdict import RULE, decide, from_record

    record = _well_typed(record)
    if record.get("status") != "ok":  # a failed (or unknown) status never shows a verdict of its own
        return {**record, "status": "failed", "verdict": "failed"}
    if "checks" not in record:  # from before the rule: its verdict is kept as text, not as a badge
        return {**record, "verdict": "no intervals", "old_verdict": str(record.get("verdict"))}
    try:
        checks = [from_record(c) for c in record["checks"]]
        verdict = decide(checks)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return {**record, "status": "failed", "verdict": "failed", "checks": [],
                "why": f"unreadable checks in {fname}: {type(exc).__name__}: {exc}"}
    return {**record, "checks": [c.record() for c in checks], "verdict": verdict, "rule": RULE}


def _registered() -> list[str]:
    try:
        from tenfold.report.registry import load_all

        return list(load_all())
    except Exception:  # noqa: BLE001 - the report must build even if an experiment module is broken
        return []


def _environment():
    """jinja2 environment over ``report/templates`` (autoescaping on: every value from a result file is text)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("tenfold.report", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.globals.update(fmt=_fmt, interval=_interval, measured=_measured, flatten=_flatten, matrix_columns=_matrix_columns, weight_files=_weight_files,
                       provenance_line=_provenance_line)
    return env


def kept_full_profile_dir() -> Path | None:
    """The full-profile results kept in the repository (``docs/full-profile``) beside this source tree, or None
    (an installed wheel has no such folder)."""
    here = Path(__file__).resolve().parents[3] / "docs" / "full-profile"
    return here if (here / "results").is_dir() else None


def build_report(out_dir: str | Path, full_profile: str | Path | None = "auto") -> Path:
    """(Re)build ``out_dir/index.html`` from ``out_dir/results/*.json`` with the jinja2 template
    ``report/templates/report.html.j2``; return its path. Raises TenfoldError when ``out_dir`` is not a folder.

    ``full_profile``: a folder of kept full-profile results (``auto``: the repository's ``docs/full-profile``);
    each experiment run at another profile shows the kept full-profile verdict beside its own."""
    out = Path(out_dir)
    if not out.is_dir():
        raise TenfoldError(f"{out} is a file, not a report folder" if out.exists() else
                           f"report directory not found: {out}")
    results = out / "results"
    records = load_records(out)
    by_paper: dict[str, list[dict]] = {}
    order = {name: i for i, name in enumerate(_registered())}  # experiments in the order their modules define them
    for rec in sorted(records, key=lambda r: (order.get(r.get("name"), len(order)), str(r.get("name")))):
        by_paper.setdefault(rec.get("paper", "?"), []).append(rec)
    from tenfold.report.registry import load_all

    experiments = load_all()
    sections = [{"paper": paper, "records": by_paper.get(paper["key"], []),
                 "registered": [e.name for e in experiments.values() if e.paper == paper["key"]]} for paper in PAPERS]
    known = {p["key"] for p in PAPERS}

    def plot_data(name: str) -> str | None:
        """The plot's bytes as base64, or None when it is missing or not inside ``results`` (a result file is
        data: its plot names must not make the page embed other files)."""
        path = (results / str(name)).resolve()
        inside = path.is_relative_to(results.resolve())
        return base64.b64encode(path.read_bytes()).decode() if inside and path.is_file() else None

    full_dir = kept_full_profile_dir() if full_profile == "auto" else (Path(full_profile) if full_profile else None)
    full = {}
    if full_dir is not None and full_dir.resolve() != out.resolve():
        full = {r.get("name"): r for r in load_records(full_dir) if r.get("profile") == "full"}

    env = _environment()
    env.globals["plot_data"] = plot_data
    env.globals["full_profile"] = lambda rec: full.get(rec.get("name")) if rec.get("profile") != "full" else None
    env.globals["full_dir"] = str(full_dir) if full_dir else ""
    html = env.get_template("report.html.j2").render(
        css=CSS, stamp=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"), n_records=len(records),
        results_dir=str(results), sections=sections, strays=[r for r in records if r.get("paper") not in known])
    index = out / "index.html"
    tmp = index.with_name(f".{index.name}.tmp")
    tmp.write_text(html, encoding="utf-8")
    tmp.replace(index)  # a reader never sees half a page
    return index
