"""Take the README's screenshot of the chat page: a real `tenfold serve` (window 4+124) and four greedy turns in
headless Chromium, so the cache panel shows sinks, the eviction marker, evicted text and the window.

    .venv/bin/python scripts/chat_screenshot.py docs/chat-page.png
"""
import sys

from playwright.sync_api import sync_playwright

from tenfold.report.browser import find_chromium
from tenfold.serve.launch import ServerProcess


def main(out: str) -> None:
    with ServerProcess(["--window", "124", "--dtype", "float32"], start_timeout=180) as srv, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=find_chromium(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(srv.base + "/")
        page.wait_for_selector("#model:not(:empty)")
        page.fill("#temperature", "0")
        page.fill("#max-tokens", "40")
        for question in ("Hi! Who are you?", "Tell me about the sea.", "Write a short poem about stars.",
                         "And one about the moon."):
            page.fill("#input", question)
            page.press("#input", "Enter")
            page.wait_for_selector("#send[disabled]")
            page.wait_for_selector("#send:not([disabled])", timeout=180_000)
            page.wait_for_selector("#tokens[data-state=filled]")
        page.screenshot(path=out)
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "docs/chat-page.png")
