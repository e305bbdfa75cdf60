import subprocess
import sys

import pytest


@pytest.mark.parametrize("args,needle", [
    (["stream-ppl", "--book", "emma", "--window", "0"], "--window: must be at least 1"),
    (["stream-ppl", "--book", "emma", "--sinks", "-1"], "--sinks: must be at least 0"),
    (["stream-ppl", "--book", "emma", "--sinks", "8", "--window", "4"], "must not be smaller"),
    (["chat", "--window", "16", "--prefill-chunk", "17"], "must not be larger than --window"),
    (["chat", "--window", "16", "--rebase-at", "20"], "--rebase-at must be at least"),
    (["serve", "--window", "x"], "'x' is not an integer"),
    (["stream-ppl", "--text", "/no/such/file.txt"], "not found"),
    (["stream-ppl", "--book", "ulysses"], "unknown Austen novel"),
    (["stream-ppl", "--book", "emma", "--method", "magic"], "invalid choice"),
    (["stream-ppl", "--book", "emma", "--text", "x"], "not allowed with"),
    (["chat", "--window", "0"], "--window: must be at least 1"),
])
def test_stream_cli_bad_input_is_one_line(args, needle):
    res = subprocess.run([sys.executable, "-m", "tenfold.cli", *args], capture_output=True, text=True, timeout=300)
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], res.stderr


def test_empty_text_file_is_rejected(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    res = subprocess.run([sys.executable, "-m", "tenfold.cli", "stream-ppl", "--text", str(empty)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and "empty" in res.stderr and len(res.stderr.strip().splitlines()) == 1
