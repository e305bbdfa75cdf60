"""The probing runner: messages and techniques, retries, garbage and time-outs (over real HTTP), the answer cache."""
import json
import socket
import threading
import time

import pytest
from PIL import Image

from tenfold.errors import TenfoldError
from tenfold.lmm.backends import BackendError, OpenAIVision, VisionBackend, split_parts
from tenfold.lmm.prompts import EXPERT, build_messages
from tenfold.lmm.runner import CACHE, AnswerCache, RateLimit, accuracy_by, run_suite, write_results
from tenfold.lmm.suite import parse_suite


@pytest.fixture()
def suite_dir(tmp_path):
    for name, colour in (("a.png", (200, 30, 30)), ("b.png", (30, 30, 200))):
        Image.new("RGB", (32, 32), colour).save(tmp_path / name)
    data = {"name": "t", "samples": [
        {"id": f"q{k}", "category": "attributes" if k % 2 else "counting", "images": ["a.png"],
         "prompt": f"What colour is {k}?", "answer": "red", "pointer": "box" if k < 2 else None} for k in range(6)]}
    data["samples"].append({"id": "shots", "category": "few-shot", "images": ["a.png", "b.png"],
                            "prompt": "Compare <image> with <image>.", "answer": "2", "scoring": "numeric",
                            "examples": [{"images": ["b.png"], "prompt": "How many?", "answer": "1"}]})
    return tmp_path, parse_suite(data)


def test_messages_carry_images_in_place_and_the_techniques(suite_dir):
    base, suite = suite_dir
    shots = suite.samples[-1]
    plain = build_messages(shots, base)
    assert len(plain) == 1 and [p["type"] for p in plain[0]["content"]] == ["text", "image_url", "text", "image_url",
                                                                            "text"]
    assert plain[0]["content"][1]["image_url"]["url"].startswith("data:image/png;base64,")
    full = build_messages(shots, base, ("constrained", "good-performance", "few-shot"))
    assert [m["role"] for m in full] == ["system", "user", "assistant", "user"] and full[0]["content"] == EXPERT
    assert full[2]["content"] == "1" and full[-1]["content"][-1]["text"].endswith("Answer with a number only.")
    parts, n = split_parts(full[1]["content"])
    assert n == 1 and parts[0][0] == "image"
    with pytest.raises(TenfoldError, match="unknown technique"):
        build_messages(shots, base, ("shout",))


class Scripted(VisionBackend):
    """Answers from a script per sample prompt call: exceptions are raised, values returned (error paths only)."""

    name = "scripted"

    def __init__(self, script):
        self.script, self.calls, self.active, self.peak = script, 0, 0, 0
        self.lock = threading.Lock()

    def answer(self, messages, max_tokens=32):
        with self.lock:
            self.calls += 1
            self.active += 1
            self.peak = max(self.peak, self.active)
            step = self.script(self.calls, messages)
        time.sleep(0.05)
        with self.lock:
            self.active -= 1
        if isinstance(step, Exception):
            raise step
        return step


def test_garbage_and_errors_do_not_stop_the_run(suite_dir, tmp_path):
    base, suite = suite_dir
    flaky = Scripted(lambda n, m: BackendError("time-out") if n % 2 else "red")
    results = run_suite(suite, base, flaky, tmp_path / "run1", concurrency=3)
    assert [r.id for r in results] == [s.id for s in suite.samples]
    assert flaky.calls == len(suite.samples)  # one request each: retrying is the backend's business
    assert sum(r.error is not None for r in results) == (len(suite.samples) + 1) // 2
    assert flaky.peak > 1  # requests overlapped
    garbage = Scripted(lambda n, m: None if n <= 3 else "red")
    results = run_suite(suite, base, garbage, tmp_path / "run2", concurrency=1)
    assert sum(r.error is not None for r in results) == 3 and "not text" in results[0].error
    assert [r.correct for r in results[3:6]] == [True] * 3
    refusing = Scripted(lambda n, m: TenfoldError("answered 400"))
    results = run_suite(suite, base, refusing, tmp_path / "run3")
    assert refusing.calls == len(suite.samples)
    summary = accuracy_by(results, "category")
    assert summary["attributes"] == {"accuracy": 0.0, "n": 3, "errors": 3}
    assert set(accuracy_by(results, "pointer")) == {"box"}


def test_the_cache_resumes_and_asks_again_only_what_failed(suite_dir, tmp_path):
    base, suite = suite_dir
    first = Scripted(lambda n, m: BackendError("down") if n == 1 else "red")
    out = tmp_path / "run"
    results = run_suite(suite, base, first, out, concurrency=1)
    assert sum(r.error is not None for r in results) == 1
    with open(out / CACHE, "a") as fh:
        fh.write('{"key": "torn')  # a run killed mid-write
    assert len(AnswerCache(out / CACHE).answers) == len(suite.samples) - 1
    second = Scripted(lambda n, m: "red")
    again = run_suite(suite, base, second, out)
    assert second.calls == 1 and sum(r.cached for r in again) == len(suite.samples) - 1
    assert all(r.error is None for r in again)
    other = Scripted(lambda n, m: "red")
    run_suite(suite, base, other, out, techniques=("constrained",))
    assert other.calls == len(suite.samples)  # other techniques, other questions
    lines = (write_results(again, out)).read_text().splitlines()
    assert json.loads(lines[0])["id"] == "q0"


def test_rate_limit_spaces_request_starts():
    limit = RateLimit(20)
    starts = []

    def go():
        limit.wait()
        starts.append(time.monotonic())

    threads = [threading.Thread(target=go) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    starts.sort()
    assert all(b - a >= 0.045 for a, b in zip(starts, starts[1:]))
    with pytest.raises(TenfoldError, match="positive"):
        RateLimit(0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def misbehaving_server():
    """A real HTTP server whose /v1/chat/completions misbehaves by model name (error paths of the client)."""
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    app = FastAPI()
    calls: dict[str, int] = {}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        import asyncio

        body = await request.json()
        model = body["model"]
        if model == "slow":
            await asyncio.sleep(3)
        if model == "garbage":
            return PlainTextResponse("<html>oops</html>")
        if model == "no-text":
            return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": model,
                                 "choices": [{"index": 0, "finish_reason": "stop",
                                              "message": {"role": "assistant", "content": None}}]})
        if model == "broken":
            return JSONResponse({"error": {"message": "boom"}}, status_code=500)
        if model.startswith("flaky-"):  # 503 for the first N requests of this model name, then an answer
            calls[model] = calls.get(model, 0) + 1
            if calls[model] <= int(model.split("-")[1]):
                return JSONResponse({"error": {"message": "busy"}}, status_code=503, headers={"retry-after": "0"})
        if model == "refuse":
            return JSONResponse({"error": {"message": "bad image"}}, status_code=400)
        n_images = sum(p.get("type") == "image_url" for m in body["messages"] if isinstance(m["content"], list)
                       for p in m["content"])
        return JSONResponse({"id": "x", "object": "chat.completion", "created": 0, "model": model,
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": f"red ({n_images} images)"}}]})

    @app.post("/moved/v1/chat/completions")
    async def moved():  # a proxy that moved the endpoint: 307 keeps the method and the body
        from fastapi.responses import RedirectResponse

        return RedirectResponse("/v1/chat/completions", status_code=307)

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(100):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/v1"
    server.should_exit = True
    thread.join(5)


def test_openai_backend_over_http_survives_timeouts_and_garbage(misbehaving_server, suite_dir, tmp_path):
    base, suite = suite_dir
    good = OpenAIVision(misbehaving_server, "good")
    messages = build_messages(suite.samples[-1], base)
    assert good.answer(messages) == "red (2 images)"
    for model, kind in (("slow", BackendError), ("garbage", BackendError), ("no-text", BackendError),
                        ("broken", BackendError), ("refuse", TenfoldError)):
        with pytest.raises(kind):
            OpenAIVision(misbehaving_server, model, timeout=0.5).answer(messages)
    with pytest.raises(BackendError):
        OpenAIVision("http://127.0.0.1:9/v1", "x", timeout=0.5).answer(messages)
    results = run_suite(suite, base, OpenAIVision(misbehaving_server, "slow", timeout=0.3, max_retries=1),
                        tmp_path / "slow", concurrency=4)
    assert all(r.error and "gave up after 2 attempts" in r.error for r in results)
    # the openai SDK retries a 503 (honouring Retry-After): two failures, then the answer, with max_retries=2 ...
    assert OpenAIVision(misbehaving_server, "flaky-2", max_retries=2).answer(messages) == "red (2 images)"
    # ... and gives up with max_retries=1 (the server's count goes on: 2 more failures for 'flaky-5')
    with pytest.raises(BackendError, match="503 .gave up after 2 attempts"):
        OpenAIVision(misbehaving_server, "flaky-5", max_retries=1).answer(messages)
    with pytest.raises(TenfoldError, match="--retries must be >= 0"):
        OpenAIVision(misbehaving_server, "good", max_retries=-1)
    results = run_suite(suite, base, good, tmp_path / "good", concurrency=4, rate=50)
    assert all(r.correct and r.error is None for r in results)  # "red (2 images)" is also right for "2"
    with pytest.raises(TenfoldError, match="needs --base-url"):
        OpenAIVision("", "m")


def test_openai_backend_follows_redirects_like_the_sdk(misbehaving_server, suite_dir):
    """The backend's own httpx client (for the stop hook) dropped the SDK's defaults: a 307 from the server was
    'answered 307' instead of being followed as openai.OpenAI() does."""
    base, suite = suite_dir
    moved = OpenAIVision(misbehaving_server.replace("/v1", "/moved/v1"), "good")
    assert moved.answer(build_messages(suite.samples[-1], base)) == "red (2 images)"


def _lmm(*args, timeout=600):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tenfold", "lmm", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cli_suite_then_run_on_the_local_vlm(tmp_path, lm):
    import copy

    from tenfold.vision.clip import small_clip, world_tokenizer
    from tenfold.vision.vlm import build_vlm

    vlm = build_vlm(small_clip(len(world_tokenizer()), seed=0), lm=copy.deepcopy(lm[0]), tokenizer=lm[1],
                    image_tokens=4)
    vlm.save(tmp_path / "vlm")
    made = _lmm("suite", "--out", str(tmp_path / "suite"), "--n", "1", "--size", "64", "--category", "counting",
                "--category", "referring", "--pointer", "box", "--pointer", "marks")
    assert made.returncode == 0 and "3 samples" in made.stdout, made.stderr
    args = ["run", str(tmp_path / "suite"),  # the folder `lmm suite --out` made: its suite.json
            "--vlm", str(tmp_path / "vlm"), "--out", str(tmp_path / "run"),
            "--technique", "constrained", "--max-tokens", "4", "--json"]
    run = _lmm(*args)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["samples"] == 3 and summary["errors"] == 0 and set(summary["by_pointer"]) == {"box", "marks"}
    assert len((tmp_path / "run" / "answers.jsonl").read_text().splitlines()) == 3
    page = (tmp_path / "run" / "report.html").read_text()
    assert page.count("class='card") == 3 and "By pointer type" in page
    for bad, message in ((["--backend", "openai", "--vlm", "x"], "--vlm is for --backend local"),
                         (["--backend", "openai", "--model", "m"], "needs --base-url"),
                         ([], "needs --vlm"),
                         (["--vlm", str(tmp_path / "vlm"), "--judge-model", "gpt"], "needs --judge-base-url")):
        res = _lmm("run", str(tmp_path / "suite" / "suite.json"), "--out", str(tmp_path / "r2"), *bad)
        assert res.returncode != 0 and message in res.stderr and "Traceback" not in res.stderr, res.stderr
    res = _lmm("run", str(tmp_path / "absent.yaml"), "--out", str(tmp_path / "r3"))
    assert res.returncode != 0 and "no suite file" in res.stderr
