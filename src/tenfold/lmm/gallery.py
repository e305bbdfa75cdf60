"""The HTML page of a probing run: accuracy per category and per pointer type, and a gallery of every prompt (its
images as drawn, the question, the expected and the given answer) - the quantified form of the paper's figures."""
from __future__ import annotations

import base64
import io
from html import escape
from pathlib import Path

from tenfold.lmm.runner import Result, accuracy_by
from tenfold.lmm.suite import read_images

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px;word-break:break-all}table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 10px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;padding:6px;width:250px;
font-size:12px}.card img{width:116px;image-rendering:pixelated;margin:1px;border:1px solid #eee}
.ok{border-left:5px solid #2a2}.bad{border-left:5px solid #c33}.err{border-left:5px solid #e90}.muted{color:#777}"""


def _thumb(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return f"<img src='data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}'>"


def _table(title: str, rows: dict) -> str:
    if not rows:
        return ""
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{v['accuracy']:.2f}</td><td>{v['n']}</td><td>{v['errors']}</td>"
                   "</tr>" for k, v in rows.items())
    return f"<h2>{escape(title)}</h2><table><tr><th></th><th>accuracy</th><th>n</th><th>errors</th></tr>{body}</table>"


def summary(results: list[Result]) -> dict:
    ok = [r for r in results if r.error is None]
    return {"accuracy": round(sum(r.correct for r in results) / max(1, len(results)), 3), "samples": len(results),
            "errors": len(results) - len(ok), "by category": accuracy_by(results, "category"),
            "by pointer": accuracy_by(results, "pointer")}


def write_gallery(suite, base: str | Path, results: list[Result], out: str | Path, title: str) -> Path:
    """``out`` (an .html file): tables and one card per sample, images inline."""
    s = summary(results)
    cards = []
    for sample, r in zip(suite.samples, results):
        state = "err" if r.error else "ok" if r.correct else "bad"
        given = escape(r.answer) if r.answer is not None else f"<i>error: {escape(r.error or '')}</i>"
        expected = ", ".join(sample.answer) if isinstance(sample.answer, list) else sample.answer
        cards.append(f"<div class='card {state}'>{''.join(_thumb(im) for im in read_images(sample.images, base))}"
                     f"<div class='muted'>{escape(sample.id)} - {escape(sample.category)}"
                     f"{' - ' + escape(sample.pointer) if sample.pointer else ''}</div>"
                     f"<div><b>Q:</b> {escape(sample.prompt)}</div><div><b>expected:</b> {escape(str(expected))}</div>"
                     f"<div><b>answer:</b> {given}</div></div>")
    html = (f"<!doctype html><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style>"
            f"<h1>{escape(title)}</h1><p>{s['samples']} samples, accuracy {s['accuracy']:.2f}, {s['errors']} errors "
            f"(techniques: {escape(', '.join(results[0].techniques) if results and results[0].techniques else 'none')})"
            f"</p>{_table('By category', s['by category'])}{_table('By pointer type', s['by pointer'])}"
            f"<h2>Gallery</h2><div class='grid'>{''.join(cards)}</div>")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
