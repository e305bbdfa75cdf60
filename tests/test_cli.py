import json
import subprocess
import sys

import pytest

from tenfold.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "tenfold.cli", *args], capture_output=True, text=True, timeout=600)


def test_help_lists_every_verb():
    out = run_cli("--help").stdout
    for verb in ("generate", "models", "data", "reproduce", "report"):
        assert verb in out


@pytest.mark.parametrize(
    "args,needle",
    [(["nonsense-verb"], "invalid choice"), (["reproduce", "--profile", "huge"], "invalid choice"),
     (["generate"], "required"), (["reproduce", "no-such-experiment"], "unknown experiment"),
     (["generate", "hi", "--model", "no/such/model"], "unknown model"), (["report", "/nonexistent/dir"], "not found")],
)
def test_bad_arguments_give_one_line_errors(args, needle):
    res = run_cli(*args)
    assert res.returncode != 0
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert needle in lines[0]


def test_models_json(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["name"] == "smollm2-135m-instruct"


@pytest.mark.slow
def test_generate_streams_an_answer():
    res = run_cli("generate", "What is the capital of France?", "--max-new-tokens", "12")
    assert res.returncode == 0, res.stderr
    assert "Paris" in res.stdout
