"""The report's browser check (tenfold.report.browser) on small hand-written pages: it must find a broken image,
a console error, an uncaught error, a hidden badge and a wrong section count, and find nothing on a clean page.

These tests need Debian's chromium and Playwright (`make browser`, the `dev` extra); without them they fail with
the install hint, they do not skip.
"""
import base64
import subprocess
import sys
from pathlib import Path

import pytest

from tenfold.errors import TenfoldError
from tenfold.report import browser

ROOT = Path(__file__).resolve().parents[2]

# A 1x1 PNG, inlined as the report inlines its plots.
PNG = base64.b64encode(bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e5"
    "2d8f4e0000000049454e44ae426082")).decode()
STYLE = ".badge{display:inline-block;background:#2a2;color:#fff}"


def _page(tmp_path, body: str) -> Path:
    path = tmp_path / "page.html"
    path.write_text(f"<!doctype html><html><head><style>{STYLE}</style></head><body>{body}</body></html>")
    return path


def test_a_clean_page_has_no_problems(tmp_path):
    page = _page(tmp_path, f"<section><img alt='ok' src='data:image/png;base64,{PNG}'>"
                           "<span class='badge'>reproduced</span></section><section></section>")
    assert browser.check_page(page, sections=2) == []


def test_the_check_finds_a_broken_image_and_a_console_error(tmp_path):
    page = _page(tmp_path, f"<section><img alt='ok' src='data:image/png;base64,{PNG}'>"
                           "<img alt='broken' src='data:image/png;base64,AAAA'>"
                           "<script>console.error('boom from the page')</script></section>")
    problems = browser.check_page(page, sections=1)
    assert len(problems) == 2, problems
    assert any("image did not load" in p and "'broken'" in p for p in problems)
    assert any(p.startswith("console error") and "boom from the page" in p for p in problems)


def test_the_check_finds_a_page_error_a_hidden_badge_and_a_missing_section(tmp_path):
    page = _page(tmp_path, "<section><span class='badge' style='display:none'>partly</span>"
                           "<span class='badge'>reproduced</span>"
                           "<script>undefinedFunction()</script></section>")
    problems = browser.check_page(page, sections=2)
    assert any(p.startswith("page error") and "undefinedFunction" in p for p in problems), problems
    assert any("badge not visible" in p and "partly" in p for p in problems), problems
    assert "1 sections, expected 2" in problems
    assert not any("reproduced" in p for p in problems)


def test_a_missing_browser_is_an_error_with_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_CHROMIUM", str(tmp_path / "no-such-chromium"))
    with pytest.raises(TenfoldError, match="not an executable"):
        browser.find_chromium()
    monkeypatch.delenv("TENFOLD_CHROMIUM")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(TenfoldError, match="apt-get install chromium"):
        browser.find_chromium()


def test_the_screenshot_script_refuses_a_folder_without_a_report(tmp_path):
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(tmp_path),
                          str(tmp_path / "out.png")], capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and not (tmp_path / "out.png").exists()
    assert run.stderr.strip().splitlines() == [f"error: no report at {tmp_path / 'index.html'} "
                                               "(build it with `tenfold reproduce` or `tenfold report`)"]


def test_the_screenshot_is_the_whole_page_or_its_top(tmp_path):
    from PIL import Image

    page = _page(tmp_path, "<section style='height:2000px'><span class='badge'>reproduced</span></section>")
    assert browser.check_page(page, screenshot=tmp_path / "full.png", width=800) == []
    assert browser.check_page(page, screenshot=tmp_path / "top.png", width=800, height=300) == []
    assert Image.open(tmp_path / "full.png").size[1] >= 2000
    assert Image.open(tmp_path / "top.png").size == (800, 300)


def test_a_real_report_passes_the_browser_check_through_the_script(tmp_path):
    """A real (partial) report: `tenfold reproduce ndp --profile smoke` (seconds), then the screenshot script opens it
    in headless Chromium: no problem (its four plots load, ten paper sections, verdicts visible), a PNG written."""
    out = tmp_path / "report"
    run = subprocess.run([sys.executable, "-m", "tenfold", "reproduce", "ndp", "--profile", "smoke", "--out", str(out)],
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert (out / "index.html").read_text().count("<img ") == 4
    shot = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(out),
                           str(tmp_path / "report.png")], capture_output=True, text=True, timeout=300)
    assert shot.returncode == 0, shot.stderr
    assert shot.stdout.strip() == f"{tmp_path / 'report.png'}: 0 problem(s)"
    assert (tmp_path / "report.png").read_bytes()[:4] == b"\x89PNG"
    html = out / "index.html"  # the same report with one plot broken: the script names it and exits 1
    html.write_text(html.read_text().replace("src='data:image/png;base64,", "src='data:image/png;base64,AAAA", 1))
    shot = subprocess.run([sys.executable, str(ROOT / "scripts" / "screenshot_report.py"), str(out),
                           str(tmp_path / "broken.png")], capture_output=True, text=True, timeout=300)
    assert shot.returncode == 1 and "image did not load" in shot.stderr
