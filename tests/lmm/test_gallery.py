"""The probing run's HTML page (jinja2 template, autoescaped): a model's answer cannot inject markup."""
import json

from PIL import Image

from tenfold.lmm.gallery import write_gallery
from tenfold.lmm.runner import Result
from tenfold.lmm.suite import parse_suite


def test_gallery_escapes_answers_and_shows_every_sample(tmp_path):
    Image.new("RGB", (8, 8), (200, 30, 30)).save(tmp_path / "a.png")
    suite = parse_suite({"name": "t", "samples": [
        {"id": "q0", "category": "attributes", "images": ["a.png"], "prompt": "Colour <b>?</b>", "answer": "red"},
        {"id": "q1", "category": "counting", "images": ["a.png", "a.png"], "prompt": "How many?", "answer": "2"}]})
    results = [Result("q0", "attributes", None, ["constrained"], "<script>alert(1)</script> red", True, None, False),
               Result("q1", "counting", None, ["constrained"], None, False, "server said <500>", False)]
    page = write_gallery(suite, tmp_path, results, tmp_path / "out" / "report.html", "run <1>")
    html = page.read_text()
    assert "<script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; red" in html
    assert "Colour &lt;b&gt;?&lt;/b&gt;" in html and "<title>run &lt;1&gt;</title>" in html
    assert "<i>error: server said &lt;500&gt;</i>" in html
    assert html.count("<div class='card ") == 2 and html.count("data:image/png;base64,") == 3
    assert "class='card ok'" in html and "class='card err'" in html
    assert "2 samples, accuracy 0.50, 1 errors (techniques: constrained)" in html
    assert json.dumps("By category")[1:-1] in html
