"""The chat page of ``tenfold serve`` (issue 39) in a real browser: Playwright drives Debian's Chromium (``make
browser``) against a real server on loopback with a small window (4+124) and an API key."""
import json

import httpx
import pytest

from tenfold.serve.launch import ServerProcess

pytestmark = pytest.mark.slow

KEY = "page-key-123"


@pytest.fixture(scope="module")
def page_server():
    with ServerProcess(["--window", "124", "--dtype", "float32", "--api-key", KEY, "--threads", "1"],
                       start_timeout=180) as srv:
        yield srv


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    from tenfold.report.browser import find_chromium

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=find_chromium(), headless=True,
                                      args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, page_server):
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    page = context.new_page()
    page.problems = []
    page.on("console", lambda m: page.problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("dialog", lambda d: (page.problems.append("dialog: " + d.message), d.dismiss()))
    page.goto(page_server.base + "/")
    yield page
    context.close()


def _sign_in(page, key=KEY):
    page.wait_for_selector("#key-panel:not([hidden])")
    page.fill("#key", key)
    page.click("#key-use")


def _ask(page, text, max_tokens=40):
    page.fill("#temperature", "0")
    page.fill("#max-tokens", str(max_tokens))
    page.fill("#input", text)
    page.press("#input", "Enter")
    page.wait_for_selector("#send[disabled]")
    page.wait_for_selector("#send:not([disabled])", timeout=180_000)
    page.wait_for_selector("#tokens[data-state=filled]")


def test_headers_keep_the_page_to_itself(page_server):
    r = httpx.get(page_server.base + "/")
    csp = r.headers["content-security-policy"]
    assert r.status_code == 200 and "script-src 'self'" in csp and "unsafe" not in csp
    assert "frame-ancestors 'none'" in csp and r.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in r.text  # no inline code: everything comes from /ui/ files
    assert httpx.head(page_server.base + "/").status_code == 200
    rebound = httpx.get(page_server.base + "/", headers={"Host": "attacker.example"})
    assert rebound.status_code == 400  # a loopback server answers only loopback names (DNS rebinding)
    for path in ("/ui/settings.py", "/ui/..%2Fsettings.py", "/ui/%2e%2e/app.py"):
        assert httpx.get(page_server.base + path).status_code == 404, path  # only the page's own files
    assert httpx.get(page_server.base + "/v1/models").status_code == 401  # the page is public, the API is not


def test_a_wrong_key_is_refused_and_the_right_one_kept_in_the_tab(page):
    _sign_in(page, "not-the-key")
    page.wait_for_selector("#key-error:not(:empty)")
    assert "refused" in page.inner_text("#key-error")
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    assert page.inner_text("#model") == "smollm2-135m-instruct" and page.is_hidden("#key-panel")
    assert page.evaluate("() => sessionStorage.getItem('tenfold-key')") == KEY
    assert page.evaluate("() => localStorage.getItem('tenfold-key')") is None
    assert all("401" in p for p in page.problems), page.problems


def test_a_long_conversation_shows_what_the_cache_evicted(page, page_server):
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    _ask(page, "Hi! Who are you?")
    first = page.locator(".msg.assistant .body").first.inner_text()
    assert first.strip() and page.locator("#tokens .tok.evicted").count() == 0  # the first turn fits the 4+124 window
    for question in ("Tell me about the sea.", "Write a short poem about stars.", "And one about the moon."):
        _ask(page, question)
    assert page.locator(".msg.assistant").count() == 4
    assert page.locator("#tokens .tok.evicted").count() == 1 and page.locator("#tokens .marker").count() == 1
    assert page.locator("#tokens .tok.sink").inner_text() and page.locator("#tokens .tok.window").inner_text()
    session = page.evaluate("() => sessionStorage.getItem('tenfold-session')")
    auth = {"Authorization": f"Bearer {KEY}"}
    cache = httpx.get(f"{page_server.base}/v1/sessions/{session}/cache", headers=auth).json()
    health = httpx.get(page_server.base + "/health", headers=auth).json()
    shown = {k: page.inner_text(f"#c-{k}") for k in ("seen", "held", "evicted", "fill", "memory")}
    assert shown["seen"] == str(cache["tokens_seen"]) and shown["evicted"] == str(cache["evicted"]) != "0"
    assert shown["held"] == str(cache["in_cache"]) == str(cache["sinks"] + cache["window"])
    assert shown["fill"] == "100 %"
    assert shown["memory"] == f"{health['session_memory_mb']:.2f} MiB"  # this key's only session
    assert cache["spans"][0]["state"] == "sink" and cache["spans"][0]["tokens"] == 4
    other = httpx.get(f"{page_server.base}/v1/sessions/{session}/cache", headers={"Authorization": "Bearer x"})
    assert other.status_code == 401
    assert [p for p in page.problems if "401" not in p] == [], page.problems  # 401: the page's first, keyless try


def test_the_counters_move_while_the_answer_streams(page):
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    _ask(page, "Hi!", max_tokens=5)
    first = int(page.inner_text("#c-seen"))
    page.fill("#max-tokens", "200")
    page.fill("#input", "Tell me a long story about the sea.")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.streaming .body:not(:empty)", timeout=120_000)
    seen = []
    for _ in range(40):
        if page.locator(".msg.assistant.streaming").count() == 0:
            break
        seen.append(int(page.inner_text("#c-seen")))
        page.wait_for_timeout(500)
    page.wait_for_selector("#send:not([disabled])", timeout=180_000)
    moving = [n for n in seen if n > first]
    assert len(set(moving)) >= 2, seen  # the counters grew during the stream, not only at its end


def test_model_output_is_rendered_as_text_never_as_html(page):
    """Model output holding <script> and <img onerror> shows as text (the answer is what a hostile model could
    stream: it is put on the wire by intercepting the page's own request, the one error path mocked here)."""
    hostile = ("Here: <script>alert('x')</script> and <img src=x onerror=alert(1)> and "
               "[click](javascript:alert(2)) and **bold**")
    chunks = [{"choices": [{"index": 0, "delta": {"content": hostile[:30]}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {"content": hostile[30:]}, "finish_reason": "stop"}]}]
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route("**/v1/chat/completions", lambda route: route.fulfill(status=200, body=body,
                                                                     content_type="text/event-stream"))
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    page.fill("#input", "<b>my own</b> <img src=y onerror=alert(3)>")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant:not(.streaming)")
    answer = page.locator(".msg.assistant .body")
    assert "<script>alert('x')</script>" in answer.inner_text() and "onerror=alert(1)" in answer.inner_text()
    assert answer.locator("script, img, a").count() == 0 and answer.locator("strong").inner_text() == "bold"
    assert page.locator(".msg.user .body").inner_text() == "<b>my own</b> <img src=y onerror=alert(3)>"
    assert page.locator("#messages img, #messages script, #messages b").count() == 0
    assert not any(p.startswith("dialog") for p in page.problems), page.problems


def test_stop_cancels_the_stream_on_the_server(page, page_server):
    auth = {"Authorization": f"Bearer {KEY}"}
    before = httpx.get(page_server.base + "/health", headers=auth).json()["cancelled"]
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    page.fill("#max-tokens", "2000")
    page.fill("#temperature", "1")
    page.fill("#input", "Write a very long story about a lighthouse.")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.streaming .body:not(:empty)", timeout=120_000)
    page.click("#stop")
    page.wait_for_selector("#send:not([disabled])")
    assert page.inner_text("#status") == "stopped"
    deadline = 50
    while httpx.get(page_server.base + "/health", headers=auth).json()["cancelled"] == before and deadline:
        page.wait_for_timeout(200)
        deadline -= 1
    assert httpx.get(page_server.base + "/health", headers=auth).json()["cancelled"] == before + 1


def test_shift_enter_is_a_new_line_and_the_theme_switches(page):
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    page.fill("#input", "line one")
    page.press("#input", "Shift+Enter")
    page.keyboard.type("line two")
    assert page.input_value("#input") == "line one\nline two" and page.locator(".msg").count() == 0
    page.click("#theme")
    first = page.evaluate("() => document.documentElement.dataset.theme")
    page.click("#theme")
    assert {first, page.evaluate("() => document.documentElement.dataset.theme")} == {"light", "dark"}


def test_a_turn_without_an_answer_leaves_the_conversation(page, page_server):
    """A refused send (here max tokens above the server's cap) is not kept in the history: its text goes back to
    the box, and the next request carries only what was answered (it used to be sent again with every turn)."""
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    page.fill("#max-tokens", "99999")
    page.fill("#input", "A message the server refuses.")
    page.press("#input", "Enter")
    page.wait_for_selector("#status.error")
    assert "limit" in page.inner_text("#status") and page.input_value("#input") == "A message the server refuses."
    assert page.locator(".msg").count() == 0
    sent = []
    page.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/v1/chat/completions") else None)
    page.fill("#max-tokens", "")  # what letters typed into a number field become
    page.press("#input", "Enter")
    assert "whole number" in page.inner_text("#status") and not sent  # a bad setting is refused before sending
    _ask(page, "Hi!", max_tokens=5)
    assert [m["content"] for m in json.loads(sent[-1])["messages"]] == ["Hi!"]


def test_new_conversation_during_an_answer_keeps_it_out(page):
    _sign_in(page)
    page.wait_for_selector("#model:not(:empty)")
    page.fill("#max-tokens", "300")
    page.fill("#input", "Count from 1 to 100.")
    page.press("#input", "Enter")
    page.wait_for_selector(".msg.assistant.streaming .body:not(:empty)", timeout=120_000)
    page.click("#new")
    page.wait_for_selector("#send:not([disabled])")
    sent = []
    page.on("request", lambda r: sent.append(r.post_data) if r.url.endswith("/v1/chat/completions") else None)
    _ask(page, "Hi!", max_tokens=5)
    assert [m["role"] for m in json.loads(sent[-1])["messages"]] == ["user"]


def test_a_key_outside_ascii_is_refused_in_the_page(page):
    _sign_in(page, "KEY\u201cone\u201d")
    page.wait_for_selector("#key-error:not(:empty)")
    assert "ASCII" in page.inner_text("#key-error") and page.is_visible("#key-panel")
    _sign_in(page, "Bearer " + KEY)  # a pasted header value works too
    page.wait_for_selector("#model:not(:empty)")
