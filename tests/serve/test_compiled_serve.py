"""``tenfold serve`` compiles its decode step by default (issue 41): it says so, /health reports it, and a lone
greedy stream answers exactly as the eager server (the session fixture ``served``, same flags, --no-compile)."""
from __future__ import annotations

import httpx
import pytest

from tenfold.serve.launch import ServerProcess

pytestmark = pytest.mark.slow

FLAGS = ["--window", "124", "--dtype", "float32", "--max-tokens-cap", "512", "--max-body-bytes", "200000",
         "--max-prompt-tokens", "2000"]


def _ask(base: str, messages: list, session: str) -> str:
    body = {"model": "smollm2-135m-instruct", "messages": messages, "max_tokens": 40, "temperature": 0}
    res = httpx.post(base + "/v1/chat/completions", json=body, headers={"X-Session-Id": session}, timeout=300)
    assert res.status_code == 200, res.text
    return res.json()["choices"][0]["message"]["content"]


def test_default_serve_compiles_and_answers_as_the_eager_server(server):
    eager_health = httpx.get(server + "/health").json()
    assert eager_health["decode"] == {"mode": "eager"}  # the suite's servers run with TENFOLD_COMPILE=0
    with ServerProcess(FLAGS, start_timeout=600, env={"TENFOLD_COMPILE": "1"}) as srv:
        log = srv.log()
        assert "compiling the decode step" in log and "decode step compiled in" in log
        assert "compiled decoding" in log
        history = []
        story = ("Here is the start of a story. " + "The keeper climbed the stairs, lit the lamp and watched "
                 "the grey sea roll towards the rocks while the wind rose. " * 8 + "Continue it in one sentence.")
        for question in (story, "And what happened next?"):
            # the first turn fills the 128-token cache (a session's buffers then hold all of it: compiled steps);
            # the second continues the session's cache, evicting
            history.append({"role": "user", "content": question})
            answer = _ask(srv.base, history, "compiled-s")
            assert answer == _ask(server, history, "eager-s")
            history.append({"role": "assistant", "content": answer})
        health = httpx.get(srv.base + "/health").json()
        assert health["decode"]["mode"] == "compiled" and health["decode"]["compile_seconds"] > 0
        assert health["compiled_steps"] >= 40


def test_no_compile_flag_and_no_compiler_keep_the_eager_path(tmp_path):
    with ServerProcess(FLAGS + ["--no-compile"], env={"TENFOLD_COMPILE": "1"}) as srv:
        assert httpx.get(srv.base + "/health").json()["decode"] == {"mode": "eager"}
        assert "compiling" not in srv.log() and "eager decoding" in srv.log()
    with ServerProcess(FLAGS, env={"TENFOLD_COMPILE": "1", "CXX": "/nonexistent/c++", "PATH": str(tmp_path)}) as srv:
        assert httpx.get(srv.base + "/health").json()["decode"] == {"mode": "eager"}
        assert "tenfold serve: no C++ compiler found (set CXX or install g++): decoding eagerly" in srv.log()
