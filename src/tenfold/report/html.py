"""The HTML report: one self-contained page (no CDN, plots inlined), one section per paper."""
from __future__ import annotations

import base64
import datetime as _dt
import json
from html import escape
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
.reproduced{background:#2e7d32}.partly{background:#ef8f00}.not-reproduced{background:#c62828}.failed{background:#555}.none{background:#9e9e9e}
img{max-width:100%;border:1px solid #eee;margin:.4em 0}code,pre{font-size:12px;background:#f3f3f3}pre{padding:.5em;overflow:auto}
.muted{color:#777}.prov{font-size:13px;color:#444;margin-top:.4em}.prov code{overflow-wrap:anywhere}table.matrix{margin:0;overflow-wrap:normal}table.matrix th{white-space:nowrap}table.matrix td:not(:first-child){text-align:right;white-space:nowrap}
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


def _matrix(value: dict, columns: list) -> str:
    head = "".join(f"<th>{escape(str(c))}</th>" for c in columns)
    body = "".join(f"<tr><td>{escape(str(r))}</td>" + "".join(
        f"<td>{escape(_fmt(row[c])) if c in row else ''}</td>" for c in columns) + "</tr>"
        for r, row in value.items())
    return f"<table class='matrix'><tr><th></th>{head}</tr>{body}</table>"


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


def _cell(value) -> str:
    columns = _matrix_columns(value)
    return _matrix(value, columns) if columns else escape(_fmt(value))


def _table(d: dict, empty: str = "none") -> str:
    if not d:
        return f"<p class='muted'>{escape(empty)}</p>"
    body = "".join(f"<tr><td>{escape(k)}</td><td>{_cell(v)}</td></tr>" for k, v in _flatten(d))
    return f"<table>{body}</table>"


def _badge(verdict: str) -> str:
    return f"<span class='badge {escape(verdict.replace(' ', '-'))}'>{escape(verdict)}</span>"


def _plot(results: Path, name: str) -> str:
    path = results / name
    if not path.exists():
        return f"<p class='muted'>plot {escape(name)} missing</p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return f"<img alt='{escape(name)}' src='data:image/png;base64,{data}'>"


def _models_html(models: list[dict]) -> str:
    if not models:
        return "<p class='muted'>no pretrained model or stored foundation loaded</p>"
    rows = []
    for m in models:
        files = [*m.get("weights", []), *([{**m["origin"], "file": f"converted from {m['origin']['file']}"}]
                                          if isinstance(m.get("origin"), dict) else [])]
        cells = "<br>".join(f"{escape(w['file'])}: <code>sha256 {escape(w['sha256'])}</code> "
                            f"({w['bytes'] / 1e6:.1f} MB)" for w in files) or escape(
            "not stored (trained in this run)" if not m.get("source") else m.get("error", "no weight files found"))
        rows.append(f"<tr><td>{escape(m['id'])}</td><td>{escape(str(m.get('source')))}</td><td>{cells}</td></tr>")
    return f"<table><tr><th>model</th><th>loaded from</th><th>weights</th></tr>{''.join(rows)}</table>"


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


def _provenance_html(rec: dict) -> str:
    """What produced the result (``env``, :mod:`tenfold.provenance`): one line, the details folded below it."""
    env = rec.get("env")
    if not env:
        return "<p class='muted prov'>Provenance: not recorded (a result file from before tenfold recorded it).</p>"
    details = "".join(f"<h4>{title}</h4>{body}" for title, body in (
        ("Code", _table(env.get("tenfold", {}))), ("Models", _models_html(env.get("models", []))),
        ("Seeds", _table(env.get("seeds", {}))), ("Threads", _table(env.get("threads", {}))),
        ("Machine", _table({**env.get("machine", {}), "started": env.get("started")})),
        ("Python", _table(env.get("python", {}))), ("Libraries", _table(env.get("libraries", {})))))
    return (f"<details class='prov'><summary><b>Provenance:</b> {escape(_provenance_line(env))}</summary>"
            f"{details}</details>")


def _experiment_html(rec: dict, results: Path) -> str:
    parts = [f"<div class='exp' id='{escape(rec['name'])}'><h3>{escape(rec['name'])} {_badge(rec.get('verdict', 'failed'))}</h3>",
             f"<p><b>Claim:</b> {escape(rec.get('claim', ''))}</p>",
             f"<p><b>Verdict:</b> {escape(rec.get('why', ''))}</p>",
             "<div class='cols'><div><h4>Paper</h4>", _table(rec.get("paper_numbers", {})),
             "</div><div><h4>Ours (measured)</h4>", _table(rec.get("ours", {}), "no result"), "</div></div>"]
    parts += [_plot(results, p) for p in rec.get("plots", [])]
    if rec.get("status") == "failed":
        parts.append(f"<details open><summary>Error</summary><pre>{escape(rec.get('traceback', rec.get('error', '')))}</pre></details>")
    parts.append(f"<details><summary>Settings (profile {escape(rec.get('profile', '?'))}, "
                 f"runtime {rec.get('runtime_s', 0):.1f} s)</summary>{_table(rec.get('settings', {}))}</details>")
    parts.append(_provenance_html(rec) + "</div>")
    return "".join(parts)


def load_records(out_dir: str | Path) -> list[dict]:
    results = Path(out_dir) / "results"
    records = []
    for path in sorted(results.glob("*.json")):
        try:
            records.append(json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, UnicodeDecodeError):
            records.append({"name": path.stem, "paper": "?", "status": "failed", "verdict": "failed",
                            "why": f"unreadable result file {path.name}"})
    return records


def _registered() -> list[str]:
    try:
        from tenfold.report.registry import load_all

        return list(load_all())
    except Exception:  # noqa: BLE001 - the report must build even if an experiment module is broken
        return []


def build_report(out_dir: str | Path) -> Path:
    """(Re)build ``out_dir/index.html`` from ``out_dir/results/*.json``; return its path."""
    out = Path(out_dir)
    if not out.is_dir():
        raise TenfoldError(f"report directory not found: {out}")
    results = out / "results"
    records = load_records(out)
    by_paper: dict[str, list[dict]] = {}
    order = {name: i for i, name in enumerate(_registered())}  # experiments in the order their modules define them
    for rec in sorted(records, key=lambda r: (order.get(r.get("name"), len(order)), str(r.get("name")))):
        by_paper.setdefault(rec.get("paper", "?"), []).append(rec)
    summary = []
    sections = []
    from tenfold.report.registry import load_all

    experiments = load_all()
    for i, paper in enumerate(PAPERS, 1):
        recs = by_paper.get(paper["key"], [])
        verdicts = " ".join(_badge(r.get("verdict", "failed")) for r in recs) or _badge("none")
        summary.append(f"<tr><td>{i}</td><td><a href='#{paper['key']}'>{escape(paper['title'])}</a></td>"
                       f"<td>{len(recs)}</td><td>{verdicts}</td></tr>")
        registered = [e.name for e in experiments.values() if e.paper == paper["key"]]
        missing = (f"<p class='muted'>Not run for this report: <code>tenfold reproduce {escape(' '.join(registered))} "
                   f"--out DIR</code> adds it.</p>") if registered else (
            "<p class='muted'>No experiment yet: this paper's reproduction is not implemented in tenfold yet.</p>")
        body = "".join(_experiment_html(r, results) for r in recs) or missing
        sections.append(
            f"<section id='{paper['key']}'><h2>{i}. {escape(paper['title'])}</h2>"
            f"<p class='muted'>{escape(paper['authors'])} &middot; arXiv {escape(paper['arxiv'])} &middot; "
            f"<code>{escape(paper['package'])}</code></p><p><b>Paper's headline:</b> {escape(paper['headline'])}</p>"
            f"{body}</section>")
    known = {p["key"] for p in PAPERS}
    strays = [r for r in records if r.get("paper") not in known]
    if strays:
        sections.append("<section id='other'><h2>Other result files</h2>"
                        + "".join(_experiment_html(r, results) for r in strays) + "</section>")
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    html = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>tenfold report</title>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><style>{CSS}</style></head><body>"
            f"<h1>tenfold: ten papers, reproduced small</h1><p class='sub'>Built {stamp} from {len(records)} "
            f"result file(s) in <code>{escape(str(results))}</code>. Paper numbers are the papers' own; ours are "
            f"measured on this machine by <code>tenfold reproduce</code>.</p>"
            f"<table><tr><th>#</th><th>Paper</th><th>Experiments</th><th>Verdicts</th></tr>{''.join(summary)}</table>"
            f"{''.join(sections)}</body></html>")
    index = out / "index.html"
    index.write_text(html, encoding="utf-8")
    return index
