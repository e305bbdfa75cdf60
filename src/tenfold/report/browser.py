"""Open an HTML report in a real headless browser and list what a reader would see broken.

The browser is Debian's ``chromium`` (or the executable named by ``$TENFOLD_CHROMIUM``), driven by Playwright
for Python with ``executable_path``: Playwright's own browser download is never used. ``check_report`` returns
the problems it found (an image that did not load, a console error, an uncaught page error, a verdict badge
that is not visible, a wrong number of paper sections) as one line each, and can save a full-page screenshot.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

from tenfold.errors import TenfoldError

INSTALL_HINT = ("install Debian's chromium (`make browser`, or `apt-get install chromium` as root) and Playwright "
                "(`pip install playwright`, in the `dev` extra), or set TENFOLD_CHROMIUM to a Chromium executable")


def find_chromium() -> str:
    """The Chromium executable to drive: ``$TENFOLD_CHROMIUM``, else ``chromium`` on PATH."""
    named = os.environ.get("TENFOLD_CHROMIUM")
    if named:
        if not (Path(named).is_file() and os.access(named, os.X_OK)):
            raise TenfoldError(f"TENFOLD_CHROMIUM={named} is not an executable file")
        return named
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    raise TenfoldError(f"no Chromium browser found: {INSTALL_HINT}")


def check_page(path: str | Path, screenshot: str | Path | None = None, sections: int | None = None,
               badges: str = ".badge", width: int = 1200, height: int | None = None) -> list[str]:
    """Load ``path`` (a local HTML file) in headless Chromium; return the problems found, one line each.

    ``sections``: the number of ``<section>`` elements expected (None: not checked). ``badges``: a CSS selector
    whose every match must be visible. ``screenshot``: where to save a PNG of the whole page, or of its top
    ``height`` CSS pixels.
    """
    page_path = Path(path).resolve()
    if not page_path.is_file():
        raise TenfoldError(f"no such HTML file: {page_path}")
    executable = find_chromium()
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise TenfoldError(f"Playwright for Python is not installed: {INSTALL_HINT}") from None
    problems: list[str] = []
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=executable, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
            try:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}")
                        if msg.type == "error" else None)
                page.on("pageerror", lambda err: problems.append(f"page error: {err}"))
                page.goto(page_path.as_uri(), wait_until="load")
                # every image finished (loaded or failed), lazy ones included
                page.evaluate("() => document.querySelectorAll('img').forEach(i => i.loading = 'eager')")
                page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=30000)
                for img in page.locator("img").all():
                    loaded = img.evaluate("i => i.complete && i.naturalWidth > 0")
                    if not loaded:
                        src = img.get_attribute("src") or ""
                        problems.append(f"image did not load: alt={img.get_attribute('alt')!r} src={src[:60]!r}")
                if sections is not None:
                    found = page.locator("section").count()
                    if found != sections:
                        problems.append(f"{found} sections, expected {sections}")
                for badge in page.locator(badges).all():
                    if not badge.is_visible():
                        problems.append(f"verdict badge not visible: {badge.text_content()!r}")
                if screenshot is not None:
                    clip = None if height is None else {"x": 0, "y": 0, "width": width, "height": height}
                    page.screenshot(path=str(screenshot), full_page=True, clip=clip)
            finally:
                browser.close()
    except PlaywrightError as err:
        raise TenfoldError(f"the browser ({executable}) failed: {str(err).splitlines()[0]}") from None
    return problems


def check_report(report_dir: str | Path, screenshot: str | Path | None = None, height: int | None = None) -> list[str]:
    """``check_page`` on ``REPORT_DIR/index.html``, expecting one section per paper (plus "Other result files"
    where the report has one)."""
    from tenfold.report.papers import PAPERS

    index = Path(report_dir) / "index.html"
    if not index.is_file():
        raise TenfoldError(f"no report at {index} (build it with `tenfold reproduce` or `tenfold report`)")
    expected = len(PAPERS) + ("<section id='other'>" in index.read_text())
    return check_page(index, screenshot=screenshot, sections=expected, height=height)
