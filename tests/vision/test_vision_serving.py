"""``tenfold serve --vlm``: OpenAI vision messages (image_url parts with base64 data URLs) over real HTTP."""
import base64
import copy
import io

import httpx
import openai
import pytest
from PIL import Image

from tenfold.serve.images import BadImage, decode_data_url, image_key
from tenfold.vision.world import render, scenes


def data_url(image, fmt="PNG") -> str:
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


def test_decode_data_urls():
    image = render(scenes(1, "test")[0])
    back = decode_data_url(data_url(image))
    assert back.size == image.size and back.tobytes() == image.convert("RGB").tobytes()
    assert decode_data_url(data_url(image, "JPEG")).size == image.size
    assert image_key(back) == image_key(image.convert("RGB")) < 0
    assert image_key(back) != image_key(render(scenes(2, "test")[1]))
    for url, message in [("https://example.com/cat.png", "remote image URLs"), ("data:image/png,abc", "data URL like"),
                         ("data:image/png;base64,@@@", "not valid base64"),
                         ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a readable"),
                         (data_url(Image.new("RGB", (300, 300))), "at most 10000 pixels")]:
        with pytest.raises(BadImage, match=message):
            decode_data_url(url, max_pixels=10_000)


@pytest.fixture(scope="module")
def vlm_server(tmp_path_factory, lm):
    from tenfold.serve.launch import ServerProcess
    from tenfold.vision.clip import small_clip, world_tokenizer
    from tenfold.vision.vlm import build_vlm

    path = tmp_path_factory.mktemp("vlm") / "tiny-vlm"
    clip = small_clip(len(world_tokenizer()), seed=0)
    build_vlm(clip, lm=copy.deepcopy(lm[0]), tokenizer=lm[1], image_tokens=4).save(path)
    with ServerProcess(["--vlm", str(path), "--window", "252", "--max-image-pixels", "20000"], start_timeout=180) as srv:
        yield srv.base


def _ask(base, content, **extra):
    body = {"model": "tiny-vlm", "messages": [{"role": "user", "content": content}], "max_tokens": 6,
            "temperature": 0, **extra}
    return httpx.post(base + "/v1/chat/completions", json=body, timeout=120)


@pytest.mark.slow
def test_the_vlm_answers_an_openai_vision_request(vlm_server):
    client = openai.OpenAI(base_url=vlm_server + "/v1", api_key="none", max_retries=0, timeout=120)
    image = render(scenes(1, "test", seed=2)[0])
    content = [{"type": "image_url", "image_url": {"url": data_url(image)}},
               {"type": "text", "text": "How many objects are there?"}]
    out = client.chat.completions.create(model="tiny-vlm", messages=[{"role": "user", "content": content}],
                                         max_tokens=6, temperature=0)
    assert isinstance(out.choices[0].message.content, str) and out.usage.prompt_tokens > 4
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny-vlm", messages=[{"role": "user", "content": content}], max_tokens=6, temperature=0, stream=True)
        if c.choices)
    assert streamed == out.choices[0].message.content
    # a session reuses its cache only when the images in the shared prefix are the same
    first = _ask(vlm_server, content, user="s1").json()
    follow = [{"role": "user", "content": content}, {"role": "assistant", "content": first["choices"][0]["message"]["content"]},
              {"role": "user", "content": "And now?"}]
    body = {"model": "tiny-vlm", "messages": follow, "max_tokens": 4, "temperature": 0, "user": "s1"}
    reused = httpx.post(vlm_server + "/v1/chat/completions", json=body, timeout=120).json()
    assert reused["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    other = render(scenes(1, "test", seed=3)[0])
    follow[0]["content"] = [{"type": "image_url", "image_url": {"url": data_url(other)}}, content[1]]
    fresh = httpx.post(vlm_server + "/v1/chat/completions", json=body, timeout=120).json()
    assert fresh["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("url, code", [
    ("data:image/png;base64," + base64.b64encode(b"plain text").decode(), "invalid_image"),
    ("http://example.com/a.png", "invalid_image"),
    ("data:image/png;base64,!!!", "invalid_image"),
    (data_url(Image.new("RGB", (200, 200))), "invalid_image"),  # above --max-image-pixels 20000
])
def test_bad_images_get_400_and_the_server_keeps_serving(vlm_server, url, code):
    bad = _ask(vlm_server, [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": "What?"}])
    assert bad.status_code == 400 and bad.json()["error"]["code"] == code, bad.text
    good = _ask(vlm_server, [{"type": "image_url", "image_url": {"url": data_url(render(scenes(1, "test")[0]))}},
                             {"type": "text", "text": "What?"}])
    assert good.status_code == 200


@pytest.mark.slow
def test_placeholder_text_and_unknown_parts_are_rejected(vlm_server):
    typed = _ask(vlm_server, "<image> what is this?")
    assert typed.status_code == 400 and "placeholder" in typed.json()["error"]["message"]
    audio = _ask(vlm_server, [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}])
    assert audio.status_code == 400 and "unsupported content part" in audio.json()["error"]["message"]


@pytest.mark.slow
def test_a_text_only_server_refuses_images(server):
    url = data_url(render(scenes(1, "test")[0]))
    body = {"model": "smollm2-135m-instruct", "max_tokens": 4,
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}]}
    r = httpx.post(server + "/v1/chat/completions", json=body, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["code"] == "images_not_supported"


@pytest.mark.slow
def test_the_probing_harness_runs_against_the_served_vlm(vlm_server, tmp_path):
    from tenfold.lmm.backends import OpenAIVision
    from tenfold.lmm.runner import run_suite
    from tenfold.lmm.suite import load_suite
    from tenfold.lmm.world_suite import world_suite

    path = world_suite(tmp_path / "suite", n=1, size=64, categories=("counting", "referring", "few-shot"),
                       pointers=("box", "crop"))
    suite = load_suite(path)
    results = run_suite(suite, path.parent, OpenAIVision(vlm_server + "/v1", "tiny-vlm", timeout=120), tmp_path / "run",
                        techniques=("constrained", "few-shot"), max_tokens=4, concurrency=2)
    assert len(results) == 4 and all(r.error is None and isinstance(r.answer, str) for r in results), results
