"""``tenfold radit``: data -> train-lm -> train-retriever -> eval on a small corpus, and one-line errors."""
import json
import subprocess
import sys

import pytest


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tenfold", "radit", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cli_pipeline(tmp_path):
    data, lm, ret = tmp_path / "data", tmp_path / "lm", tmp_path / "ret"
    r = cli("data", "--cities", "100", "--films", "100", "--out", str(data))
    assert r.returncode == 0, r.stderr
    assert (data / "dataset.json").exists() and "passages" in r.stdout
    r = cli("train-lm", "--data", str(data), "--n-train", "6", "--k", "1", "--steps", "2", "--batch-size", "2",
            "--out", str(lm), "--json")
    assert r.returncode == 0, r.stderr
    assert (lm / "model" / "config.json").exists()
    got = json.loads(r.stdout)
    assert got["model"] == str((lm / "model").resolve()) and got["steps"] == 2 and got["examples"] == 6
    assert got["loss_first"] > 0 < got["loss_last"]
    r = cli("train-lm", "--data", str(data), "--steps", "2", "--out", str(lm))
    assert r.returncode == 1 and "already holds" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("train-retriever", "--data", str(data), "--n-train", "6", "--k", "2", "--steps", "3", "--out", str(ret),
            "--json")
    assert r.returncode == 0, r.stderr
    assert (ret / "lsr.npz").exists() and (ret / "query_encoder").is_dir()
    got = json.loads(r.stdout)
    assert got["query_encoder"] == str((ret / "query_encoder").resolve()) and got["steps"] == 3 and got["k"] == 2
    assert got["kl_first"] >= 0 and got["kl_last"] >= 0
    r = cli("eval", "--data", str(data), "--lm", str(lm), "--retriever", str(ret), "--k", "2", "--n", "6", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0 <= out["accuracy"] <= 1 and out["n"] == 6 and 0 <= out["recall_at_k"] <= 1 and out["by_kind"]


@pytest.mark.parametrize("args, message", [
    (["eval", "--data", "/nonexistent"], "no ra-dit dataset"),
    (["train-retriever", "--data", "/nonexistent", "--k", "1", "--out", "OUT"], "--k must be at least 2"),
    (["train-retriever", "--data", "/nonexistent", "--out", "OUT", "--resume"], "nothing to resume"),
    (["eval", "--data", "/x", "--mode", "magic"], "invalid choice"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = cli(*args)
    assert r.returncode != 0 and message in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1
