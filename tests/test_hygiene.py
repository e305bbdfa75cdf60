"""Library hygiene: importing tenfold changes nothing in the process; loaders build objects through constructors."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import tenfold
from tenfold.cli import CLI_ENV_DEFAULTS, main

SRC = Path(tenfold.__file__).parent
PACKAGES = sorted(p.name for p in SRC.iterdir() if (p / "__init__.py").exists())


def _python(code: str) -> dict:
    """Run ``code`` in a fresh interpreter without tenfold's CLI variables set; it prints one JSON value."""
    env = {k: v for k, v in os.environ.items() if k not in CLI_ENV_DEFAULTS}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC.parent), env.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_importing_tenfold_and_every_package_leaves_the_environment_alone():
    got = _python(f"""
import json, os
before = dict(os.environ)
import tenfold, tenfold.streaming
after_streaming = dict(os.environ)
for name in {PACKAGES!r}:
    __import__("tenfold." + name)
print(json.dumps({{"streaming": after_streaming == before, "all": dict(os.environ) == before,
                  "offline": [k for k in {list(CLI_ENV_DEFAULTS)!r} if k in os.environ]}}))
""")
    assert got == {"streaming": True, "all": True, "offline": []}


def test_using_the_public_api_changes_no_environment_variable_of_its_own():
    # Third-party imports may set variables of their own (torch's inductor sets TORCHINDUCTOR_CACHE_DIR when
    # transformers imports it); those come first, so what is left to compare is tenfold's doing only.
    got = _python("""
import json, os
import torch, transformers, transformers.masking_utils, sentence_transformers, faiss
before = dict(os.environ)
from tenfold.streaming import SinkCache, enable_streaming
from tenfold.retrieval import Retriever, VectorIndex
from tenfold.models import load_lm, load_embedder
from tenfold.serve import Engine
changed = sorted(set(os.environ.items()) ^ set(before.items()))
print(json.dumps({"changed": changed, "lazy": type(SinkCache).__name__}))
""")
    assert got["changed"] == [] and got["lazy"] == "type"


def test_the_package_api_resolves_every_exported_name():
    import tenfold.retrieval
    import tenfold.streaming
    import tenfold.vision

    for pkg in (tenfold.streaming, tenfold.retrieval, tenfold.vision):
        for name in pkg.__all__:
            assert getattr(pkg, name) is not None, (pkg.__name__, name)
    from tenfold.vision import questions  # a function named like its module stays the function

    assert callable(questions) and not isinstance(questions, type(tenfold))


def test_the_cli_entry_point_sets_the_offline_defaults_without_overriding_the_user(monkeypatch, tmp_path, capsys):
    for key in CLI_ENV_DEFAULTS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's own choice wins
    assert main(["report", str(tmp_path / "absent")]) == 1
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert os.environ["TRANSFORMERS_OFFLINE"] == "1" and os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_vector_index_load_goes_through_the_constructor(tmp_path):
    from tenfold.retrieval import VectorIndex

    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(50, 8)).astype(np.float32)
    index = VectorIndex(8, "hnsw", hnsw_m=16, nprobe=3)
    index.add(vecs, [f"t{i}" for i in range(50)])
    index.save(tmp_path / "idx")
    loaded, info = VectorIndex.load(tmp_path / "idx")
    fresh = VectorIndex(8, "hnsw", hnsw_m=16, nprobe=3)
    assert set(vars(loaded)) == set(vars(fresh))  # nothing left unset, nothing extra
    assert (loaded.dim, loaded.kind, loaded.hnsw_m, loaded.nprobe) == (8, "hnsw", 16, 3) and len(loaded) == 50

    # an index saved before hnsw_m/nprobe were recorded loads with the constructor's defaults
    chunks = tmp_path / "idx" / "chunks.json"
    data = json.loads(chunks.read_text())
    del data["info"]["hnsw_m"], data["info"]["nprobe"]
    chunks.write_text(json.dumps(data))
    old, _ = VectorIndex.load(tmp_path / "idx")
    assert (old.hnsw_m, old.nprobe) == (32, 8) and set(vars(old)) == set(vars(fresh))


def test_no_loader_bypasses_a_constructor():
    """``cls.__new__(cls)`` / ``object.__new__`` in a loader leaves attributes unset; every loader calls ``cls(...)``."""
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "__new__":
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno}")
    assert offenders == []
