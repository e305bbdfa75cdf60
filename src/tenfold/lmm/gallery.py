"""The HTML page of a probing run: accuracy per category and per pointer type, and a gallery of every prompt (its
images as drawn, the question, the expected and the given answer) - the quantified form of the paper's figures."""
from __future__ import annotations

import base64
import io
from pathlib import Path

from tenfold.lmm.runner import Result, accuracy_by
from tenfold.lmm.suite import read_images

STYLE = """body{font-family:system-ui,sans-serif;margin:24px;max-width:1200px;color:#222}
h1{font-size:22px;word-break:break-all}table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:3px 10px;text-align:left}
.grid{display:flex;flex-wrap:wrap;gap:10px}.card{border:1px solid #ddd;border-radius:6px;padding:6px;width:250px;
font-size:12px}.card img{width:116px;image-rendering:pixelated;margin:1px;border:1px solid #eee}
.ok{border-left:5px solid #2a2}.bad{border-left:5px solid #c33}.err{border-left:5px solid #e90}.muted{color:#777}"""


def _png_base64(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def summary(results: list[Result]) -> dict:
    ok = [r for r in results if r.error is None]
    return {"accuracy": round(sum(r.correct for r in results) / max(1, len(results)), 3), "samples": len(results),
            "errors": len(results) - len(ok), "by category": accuracy_by(results, "category"),
            "by pointer": accuracy_by(results, "pointer")}


def write_gallery(suite, base: str | Path, results: list[Result], out: str | Path, title: str) -> Path:
    """``out`` (an .html file): tables and one card per sample, images inline; rendered from the jinja2 template
    ``lmm/templates/gallery.html.j2`` with autoescaping (answers come from a model or a remote server)."""
    from jinja2 import Environment, PackageLoader, select_autoescape

    cards = []
    for sample, r in zip(suite.samples, results):
        expected = ", ".join(sample.answer) if isinstance(sample.answer, list) else sample.answer
        cards.append({"state": "err" if r.error else "ok" if r.correct else "bad",
                      "images": [_png_base64(im) for im in read_images(sample.images, base)],
                      "id": sample.id, "category": sample.category, "pointer": sample.pointer,
                      "prompt": sample.prompt, "expected": str(expected), "answer": r.answer, "error": r.error or ""})
    techniques = ", ".join(results[0].techniques) if results and results[0].techniques else "none"
    env = Environment(loader=PackageLoader("tenfold.lmm", "templates"),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.get_template("gallery.html.j2").render(title=title, style=STYLE, s=summary(results), cards=cards,
                                                      techniques=techniques)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html)
    return out
