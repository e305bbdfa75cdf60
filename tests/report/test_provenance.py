"""Every result says what produced it: code version and commit, libraries, model weights (hashed), seeds, threads,
machine; the HTML shows it per experiment."""
import hashlib
import json
import os
import re
import subprocess

import pytest

from tenfold import provenance
from tenfold.report import REGISTRY, build_report, experiment, run_one
from tenfold.report.verdict import Check, exact


def test_file_hashes_are_cached_by_size_and_mtime(tmp_path):
    f = tmp_path / "w.safetensors"
    f.write_bytes(b"weights" * 1000)
    cache: dict = {}
    first = provenance.file_sha256(f, cache)
    assert first == hashlib.sha256(f.read_bytes()).hexdigest()
    cache[str(f.resolve())]["sha256"] = "from-the-cache"  # same size and mtime: the file is not read again
    assert provenance.file_sha256(f, cache) == "from-the-cache"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 1_000_000))  # touched: hashed anew
    assert provenance.file_sha256(f, cache) == first


def test_describe_models_keeps_its_hash_cache_in_tenfold_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"a" * 100)
    (model / "sub" / "lora.safetensors").write_bytes(b"b" * 10)
    (model / "config.json").write_text("{}")  # not a weight file
    with provenance.collect() as noted:
        provenance.note_model("m", model)
        provenance.note_model("m", model)  # noted once
        provenance.note_model("trained-here")  # nothing stored
    assert len(noted) == 2
    provenance.note_model("outside", model)  # no collection running: ignored
    described = provenance.describe_models(noted)
    assert [w["file"] for w in described[0]["weights"]] == ["model.safetensors", "sub/lora.safetensors"]
    assert described[0]["weights"][0]["sha256"] == hashlib.sha256(b"a" * 100).hexdigest()
    assert described[1]["weights"] == []
    cache = json.loads((tmp_path / "home" / "hashes.json").read_text())
    assert str((model / "model.safetensors").resolve()) in cache


def test_problems_name_what_is_missing():
    env = provenance.environment(models=[], seeds={"global": 0})
    assert provenance.problems(env) == []
    assert provenance.problems(None) == ["no env record"]
    broken = {**env, "libraries": {**env["libraries"], "torch": None}, "models": [{"id": "x", "source": "/m"}]}
    del broken["seeds"]
    got = provenance.problems(broken)
    assert "no seeds" in got and "no torch version" in got and "model x: no weight hashes" in got


@pytest.fixture
def uses_the_bundled_models():
    @experiment("test-provenance", "streamingllm", "loads the bundled LM and embedder", {})
    def _exp(run):
        from tenfold.data import austen
        from tenfold.models import load_embedder, load_lm

        run.settings["seed"] = 7
        load_lm()
        load_embedder()
        austen("emma")  # a real corpus file
        return {"ours": {"x": 1}, "checks": [Check("x", exact(1.0))], "why": "ok"}

    yield REGISTRY.pop("test-provenance")


@pytest.mark.slow
def test_a_result_records_what_produced_it_and_the_report_shows_it(tmp_path, uses_the_bundled_models):
    from tenfold.models.lm import bundled_gguf, cached_dir

    rec = run_one(uses_the_bundled_models, "smoke", str(tmp_path))
    assert rec["status"] == "ok", rec.get("traceback")
    saved = json.loads((tmp_path / "results" / "test-provenance.json").read_text())
    env = saved["env"]
    assert provenance.problems(env) == [] and set(provenance.ENV_KEYS) <= set(env)

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.path.dirname(provenance.__file__), capture_output=True,
                          text=True).stdout.strip()
    assert env["tenfold"]["commit"] == head and isinstance(env["tenfold"]["dirty"], bool)
    import torch
    import transformers

    assert env["libraries"]["torch"] == torch.__version__ and env["libraries"]["transformers"] == transformers.__version__
    assert env["seeds"] == {"global": 0, "seed": 7} and env["threads"]["torch"] == torch.get_num_threads()

    lm, emb = env["models"]
    assert lm["id"] == "smollm2-135m-instruct" and lm["source"] == str(cached_dir())
    weights = {w["file"]: w for w in lm["weights"]}
    assert "model.safetensors" in weights and re.fullmatch(r"[0-9a-f]{64}", weights["model.safetensors"]["sha256"])
    assert lm["origin"]["file"] == str(bundled_gguf()) and len(lm["origin"]["sha256"]) == 64
    assert emb["id"] == "all-minilm-l6-v2" and emb["weights"]

    # the same weights hash the same in the next result, from the cache
    again = run_one(uses_the_bundled_models, "smoke", str(tmp_path))
    assert again["env"]["models"][0]["weights"] == lm["weights"]

    html = build_report(tmp_path).read_text()
    section = html[html.index("id='test-provenance'"):]
    assert "Provenance:" in section and head[:10] in section and weights["model.safetensors"]["sha256"] in section
    assert f"torch {torch.__version__}" in section and "transformers" in section
    (emma,) = env["inputs"]  # the corpus file read, with its hash, in the record and on the page
    assert emma["file"].endswith("emma.txt") and len(emma["sha256"]) == 64 and emma["sha256"] in section
