"""The middleware's error paths, on a stand-in app behind a real uvicorn on loopback (no model needed)."""
import threading
import time

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tenfold.serve.engine import first_stop
from tenfold.serve.launch import free_port
from tenfold.serve.middleware import ApiKeys, BodyLimit, CatchAll, RequestId, json_500


async def boom(request):
    raise KeyError("a bug nobody expected")


async def echo(request):
    return PlainTextResponse(str(len(await request.body())) + " " + str(request.scope["state"].get("tenant")))


@pytest.fixture(scope="module")
def base():
    app = Starlette(routes=[Route("/boom", boom, methods=["GET"]), Route("/v1/echo", echo, methods=["POST"]),
                            Route("/health", echo, methods=["POST"])],
                    exception_handlers={Exception: json_500})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(CatchAll(RequestId(ApiKeys(BodyLimit(app, 1000), ["k"]))), port=port,
                                           log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_an_unexpected_exception_is_a_json_500_and_the_connection_lives_on(base):
    with httpx.Client(base_url=base) as c:
        r = c.get("/boom", headers={"Authorization": "Bearer k"})
        assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
        assert "KeyError" not in r.text  # no internals to the client
        assert r.headers["x-request-id"]
        ok = c.post("/v1/echo", content=b"abc", headers={"Authorization": "Bearer k"})
        assert ok.status_code == 200 and ok.text.startswith("3 ")


def test_body_limit_counts_chunked_bodies_and_replays_small_ones(base):
    auth = {"Authorization": "Bearer k"}
    assert httpx.post(base + "/v1/echo", content=iter([b"a" * 600, b"b" * 300]), headers=auth).text.startswith("900 ")
    assert httpx.post(base + "/v1/echo", content=iter([b"a" * 600, b"b" * 600]), headers=auth).status_code == 413


def test_tenant_is_a_hash_of_the_key_not_the_key(base):
    text = httpx.post(base + "/v1/echo", content=b"", headers={"Authorization": "Bearer k"}).text
    tenant = text.split(" ", 1)[1]
    assert tenant != "k" and len(tenant) == 16


def test_one_key_matcher_for_private_and_public_paths(base):
    """Issue 38 D8: two Authorization headers are refused (the middleware used to read the last and /health the
    first); on the public /health a valid key sets the tenant and a wrong one leaves it None."""
    two = [("Authorization", "Bearer wrong"), ("Authorization", "Bearer k")]
    refused = httpx.post(base + "/v1/echo", content=b"", headers=two)
    assert refused.status_code == 401 and "one API key" in refused.json()["error"]["message"]
    assert httpx.post(base + "/v1/echo", content=b"", headers={"x-api-key": "k"}).status_code == 200  # Anthropic's
    mixed = {"x-api-key": "wrong", "Authorization": "Bearer k"}
    assert httpx.post(base + "/v1/echo", content=b"", headers=mixed).status_code == 401
    assert httpx.post(base + "/health", content=b"", headers=two).text == "0 None"
    assert httpx.post(base + "/health", content=b"", headers={"Authorization": "Bearer wrong"}).text == "0 None"
    keyed = httpx.post(base + "/health", content=b"", headers={"Authorization": "Bearer k"}).text
    assert keyed.split(" ")[1] not in ("None", "k", "")


def test_first_stop_is_the_earliest_in_the_text():
    assert first_stop("a b c d", [" d", " b"]) == 1
    assert first_stop("a b c d", [" b", " d"]) == 1
    assert first_stop("abc", ["x"]) is None
    assert first_stop("hello world", ["world"]) == 6
    # "e " completes inside a longer stop string that started earlier: wait for it ...
    stops = ["e ", " a classic example of a pun"]
    assert first_stop(" is a classic example ", stops) is None
    assert first_stop(" is a classic example of a pun, where", stops) == 3
    # ... unless it cannot complete any more (the longer one diverged, or generation ended)
    assert first_stop(" is a classic example of a cat", stops) == len(" is a classic exampl")
    assert first_stop(" is a classic example ", stops, final=True) == len(" is a classic exampl")
