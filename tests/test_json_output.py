"""Every verb's ``--json`` prints snake_case keys and rounded floats (tenfold.jsonout), tested through the CLI on the
verbs that run in seconds; the helper itself on the keys and float32 noise the issue found."""
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tenfold.jsonout import round_float, snake, tidy
from tenfold.report.verdict import Check, exact

KEY = re.compile(r"^[a-z0-9_]+$")


def _significant_digits(x: float) -> int:
    mantissa = repr(abs(x)).split("e")[0].replace(".", "").lstrip("0").rstrip("0")
    return len(mantissa)


def _problems(value, path="") -> list[str]:
    """Keys that are not snake_case and floats with more than 6 significant digits (integral floats aside)."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            if not KEY.match(key):
                found.append(f"key {path}/{key!r}")
            found += _problems(item, f"{path}/{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _problems(item, f"{path}[{i}]")
    elif isinstance(value, float) and math.isfinite(value) and value != int(value):
        if _significant_digits(value) > 6:
            found.append(f"float {path}={value!r}")
    return found


def test_the_helper_makes_keys_snake_case_and_drops_float32_noise():
    assert snake("recall (held-out test)") == "recall_held_out_test"
    assert snake("image->text@1") == "image_to_text_at_1" and snake("by category") == "by_category"
    assert snake("StdPT+PauseFT") == "std_pt_plus_pause_ft" and snake("tokensPerS") == "tokens_per_s"
    assert round_float(0.05000000074505806) == 0.05 and round_float(float(np.float32(0.1))) == 0.1
    assert round_float(123456789.123) == 123456789.0 and round_float(1.23456789e-9) == 1.23457e-9
    got = tidy({"a b": [np.float32(0.3), {"C-d": 2.0000001}], "a-b": True, "n": 3, "s": "Keep Me", "x": None})
    assert got == {"a_b": [0.3, {"c_d": 2.0}], "a_b_2": True, "n": 3, "s": "Keep Me", "x": None}
    assert _problems(got) == [] and _problems({"Bad Key": 0.05000000074505806}) == [
        "key /'Bad Key'", "float /Bad Key=0.05000000074505806"]


def _json_of(*args, timeout=600) -> dict | list:
    run = subprocess.run([sys.executable, "-m", "tenfold", *args], capture_output=True, text=True, timeout=timeout)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("json") / "world"
    subprocess.run([sys.executable, "-m", "tenfold", "vision", "world", "--n", "2", "--out", str(out)], check=True,
                   capture_output=True, timeout=300)
    return out


FAST = {
    "models": lambda tmp, world: ["models", "--json"],
    "reproduce --list": lambda tmp, world: ["reproduce", "--list", "--json"],
    "doctor": lambda tmp, world: ["doctor", "--json"],
    "stop utility": lambda tmp, world: ["stop", "utility", "--task", "lpn", str(world / "seed.py"), "--json"],
    "vision parse": lambda tmp, world: ["vision", "parse", str(world / "train-000000.png"), "--json"],
    "ndp train": lambda tmp, world: ["ndp", "train", "--task", "xor", "--generations", "2", "--popsize", "4", "--out",
                                     str(tmp / "ndp"), "--json"],
    "vision train-clip": lambda tmp, world: ["vision", "train-clip", "--out", str(tmp / "clip"), "--steps", "2",
                                             "--batch-size", "8", "--n-test", "8", "--json"],
}
def _tiny_report(tmp) -> list[str]:
    """A report folder with one result file whose keys and floats need tidying."""
    (tmp / "rep" / "results").mkdir(parents=True)
    (tmp / "rep" / "results" / "x.json").write_text(json.dumps(
        {"name": "x", "paper": "ndp", "status": "ok", "verdict": "reproduced", "runtime_s": 1.23456789,
         "ours": {"a b": 0.1}, "checks": [Check("x", exact(1.0)).record()]}))
    return ["report", str(tmp / "rep"), "--json"]  # the verdict is re-derived from the check: reproduced


FAST.update({
    "stop seed": lambda tmp, world: ["stop", "seed", "--task", "lpn", "--json"],
    "stop describe": lambda tmp, world: ["stop", "describe", "--task", "lpn", "--json"],
    "report": lambda tmp, world: _tiny_report(tmp),
    "vision world": lambda tmp, world: ["vision", "world", "--n", "1", "--size", "32", "--out", str(tmp / "w"),
                                        "--json"],
    "lmm suite": lambda tmp, world: ["lmm", "suite", "--n", "1", "--size", "64", "--category", "counting",
                                     "--category", "referring", "--pointer", "arrow", "--out", str(tmp / "s"),
                                     "--json"],
    "radit data": lambda tmp, world: ["radit", "data", "--cities", "20", "--films", "20", "--out", str(tmp / "d"),
                                      "--json"],
})
MODEL = {
    "stream-ppl": lambda tmp, world: ["stream-ppl", "--book", "emma", "--tokens", "120", "--method", "sink", "--sinks",
                                      "4", "--window", "28", "--json"],
    "rag index": lambda tmp, world: ["rag", "index", str(world / "scenes.jsonl"), "--out", str(tmp / "idx"), "--json"],
    "generate": lambda tmp, world: ["generate", "Hi", "--max-new-tokens", "2", "--dtype", "float32", "--json"],
    # extract, then plot on the same 25 places (plot reuses the cached activations)
    "probes extract": lambda tmp, world: ["probes", "extract", "--dataset", "world-places", "--limit", "25", "--json"],
    "probes plot": lambda tmp, world: ["probes", "plot", "--dataset", "world-places", "--limit", "25", "--out",
                                       str(tmp / "p"), "--json"],
}
# What each new verb's JSON must say (issue 29: "--json on every verb that produces a result"), beyond tidy keys.
EXPECT = {
    "stop seed": lambda out, tmp: out["task"] == "lpn" and "def algorithm" in out["program"],
    "stop describe": lambda out, tmp: out["task"] == "lpn" and "parity" in out["description"],
    "report": lambda out, tmp: out["report"] == str((tmp / "rep" / "index.html").resolve()) and out["results"] == [
        {"name": "x", "paper": "ndp", "verdict": "reproduced", "runtime_s": 1.23457}],
    "vision world": lambda out, tmp: out["scenes"] == 1 and out["size"] == 32 and (tmp / "w" / "scenes.jsonl").is_file()
    and out["scenes_file"] == str((tmp / "w" / "scenes.jsonl").resolve()),
    "lmm suite": lambda out, tmp: out["samples"] == 2 and out["by_category"] == {"counting": 1, "referring": 1}
    and out["by_pointer"] == {"arrow": 1} and json.loads((tmp / "s" / "suite.json").read_text())["samples"],
    "radit data": lambda out, tmp: out["questions"] == sum(n for by_kind in out["by_split"].values()
                                                           for n in by_kind.values())
    and out["passages"] > 0 and out["dataset"] == str((tmp / "d" / "dataset.json").resolve()),
    "generate": lambda out, tmp: out["text"] and out["completion_tokens"] == 2 and out["prompt_tokens"] > 2
    and out["finish_reason"] == "length" and out["model"] == "smollm2-135m-instruct",
    "probes extract": lambda out, tmp: out["entities"] == 25 and out["layers"] > 1 and out["cache"].endswith(".npy"),
    "probes plot": lambda out, tmp: len(out["files"]) == 2 and all(Path(f).stat().st_size > 1000 for f in out["files"])
    and "r2" in out and "best_layer" in out,
}


@pytest.mark.parametrize("verb", list(FAST) + [pytest.param(v, marks=pytest.mark.slow) for v in MODEL])
def test_json_output_has_snake_case_keys_and_rounded_floats(verb, tmp_path, world):
    if verb == "stop utility":
        (world / "seed.py").write_text(subprocess.run([sys.executable, "-m", "tenfold", "stop", "seed", "--task", "lpn"],
                                                      capture_output=True, text=True, check=True).stdout)
    out = _json_of(*{**FAST, **MODEL}[verb](tmp_path, world))
    assert out and _problems(out) == []
    if verb == "vision train-clip":  # the keys the issue found: "image->text@1", "recall (held-out test)"
        text = json.dumps(out)
        assert "image_to_text_at_1" in text and "->" not in text and "@" not in text
    if verb in EXPECT:
        assert EXPECT[verb](out, tmp_path), out


@pytest.mark.parametrize("args, needle", [
    (["report", "/nonexistent/dir", "--json"], "report directory not found"),
    (["generate", "  ", "--json"], "the prompt is empty"),
    (["vision", "world", "--n", "0", "--out", "OUT", "--json"], "--n must be at least 1"),
    (["radit", "data", "--cities", "-1", "--out", "OUT", "--json"], "--cities and --films must be >= 0"),
    (["lmm", "suite", "--n", "0", "--out", "OUT", "--json"], "world suite"),
    (["kosmos-g", "generate", "--model", "OUT", "--prompt", " ", "--out", "OUT/x.png", "--json"],
     "the prompt is empty"),
    (["ndp", "show", "/nonexistent/run", "--json"], "not an NDP run directory"),
    (["probes", "plot", "--dataset", "world-places", "--limit", "20", "--out", "OUT", "--json"], "too few entities"),
])
def test_errors_stay_one_line_on_stderr_with_json(args, needle, tmp_path, capsys):
    from tenfold.cli import main

    assert main([a.replace("OUT", str(tmp_path / "out")) for a in args]) == 1
    got = capsys.readouterr()
    assert got.out == "" and len(got.err.strip().splitlines()) == 1 and needle in got.err, got
