"""The Codex CLI (npm ``@openai/codex``, installed by ``make codex`` into ``.venv/codex``) in ``exec`` mode with
``tenfold serve`` as its Responses API provider (issue 38 item 6): a real agent's request (a 9,000-token system
prompt, function tools and a namespace of them, ``reasoning.summary``, ``include``, ``store: false``,
``prompt_cache_key``), streamed back, and a resumed thread that continues the sink-cache session."""
import json
import os
import subprocess
from pathlib import Path

import httpx
import pytest

from tenfold.serve.launch import ServerProcess

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
CODEX = Path(__file__).resolve().parents[2] / ".venv" / "codex" / "node_modules" / ".bin" / "codex"


@pytest.fixture(scope="module")
def codex_server():
    with ServerProcess(["--max-prompt-tokens", "16000", "--max-body-bytes", "2000000", "--dtype", "float32"],
                       start_timeout=180) as srv:
        yield srv


def _codex(srv, home: Path, work: Path, *args: str) -> list[dict]:
    assert CODEX.exists(), f"{CODEX} is missing: run `make codex` (it needs npm)"
    provider = f'model_providers.tenfold={{name="tenfold", base_url="{srv.base}/v1", wire_api="responses"}}'
    run = subprocess.run([str(CODEX), "exec", "--json", "--skip-git-repo-check", "-c", "model_provider=tenfold",
                          "-c", provider, "-c", "web_search=disabled", "-m", MODEL, *args],
                         cwd=work, env={**os.environ, "CODEX_HOME": str(home), "OPENAI_API_KEY": "none"},
                         capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert events, (run.returncode, run.stdout[-2000:], run.stderr[-2000:])
    return events


def _ended(events: list[dict]) -> bool:
    """The turn ended as the protocol allows: completed, or cut by max_output_tokens (the tiny model rambles)."""
    return any(e["type"] == "turn.completed" for e in events) or \
        any(e["type"] == "turn.failed" and "max_output_tokens" in e["error"]["message"] for e in events)


def test_codex_exec_and_resume_on_a_sink_cache_session(codex_server, tmp_path):
    home, work = tmp_path / "codex-home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    first = _codex(codex_server, home, work, "Say hello.")
    said = [e["item"]["text"] for e in first if e["type"] == "item.completed" and e["item"]["type"] == "agent_message"]
    assert said and said[0].strip() and _ended(first), first
    before = httpx.get(codex_server.base + "/health").json()
    assert before["prompt_tokens_fed"] > 5000  # Codex's own instructions and tools reached the model
    again = _codex(codex_server, home, work, "resume", "--last", "Now say goodbye.")
    assert _ended(again), again
    after = httpx.get(codex_server.base + "/health").json()
    # The resumed thread sent its whole history again under the same prompt_cache_key: the session had read it,
    # so only the new turn was fed (and, when the model called a tool, the tool's output).
    reused = after["prompt_tokens_reused"] - before["prompt_tokens_reused"]
    fed = after["prompt_tokens_fed"] - before["prompt_tokens_fed"]
    assert reused > 5000 and reused > 4 * fed, (reused, fed, again)
