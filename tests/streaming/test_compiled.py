"""The compiled decode step (issue 41): every compiled result is tested against the eager sink cache.

The logic (ring writes, sinks rotated in the graph, the mask of filled columns, re-basing, eager fallbacks) is checked
on every full-attention family with ``backend="eager"`` (dynamo traces the step, no C++ build: seconds); inductor
itself is checked on a tiny Llama and, in float32 and int4, on the bundled model.
"""
from __future__ import annotations

import json
import math
import os

import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.streaming import SinkCache, SinkConfig, enable_streaming, prefill
from tenfold.streaming.compiled import CompiledDecoder, artefact_dir, cached_artefacts

from .conftest import FAMILIES, peaky, tiny


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor-default"))
    return tmp_path


def _twins(model, config, ids):
    """Two sink caches filled with the same ``ids`` (B, T)."""
    enable_streaming(model)
    pair = SinkCache(config=config), SinkCache(config=config)
    for cache in pair:
        prefill(model, cache, ids)
    return pair


def _nll_pair(model, decoder, ids, config, start):
    """Teacher-forced NLL per token of ``ids[start:]``, eager sink cache vs the compiled decoder, after the same
    prefill of ``ids[:start]``."""
    eager, compiled = _twins(model, config, ids[None, :start])
    a, b = [], []
    with torch.no_grad():
        for t in range(start, ids.numel() - 1):
            token = ids[t : t + 1]
            le = model(input_ids=token[None], cache=eager, use_cache=True).logits[0, -1].float().log_softmax(-1)
            lc = decoder.step(compiled, token)[0].log_softmax(-1)
            a.append(-le[ids[t + 1]].item())
            b.append(-lc[ids[t + 1]].item())
    return a, b, eager, compiled


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_matches_the_eager_cache_while_filling_evicting_and_rebasing(family, home):
    model = peaky(family, 4.0)
    config = SinkConfig(4, 20, rebase_at=44)  # re-bases every ~20 steps once full
    ids = torch.randint(1, 128, (90,), generator=torch.Generator().manual_seed(1))
    decoder = CompiledDecoder(model, config, backend="eager")
    a, b, eager, compiled = _nll_pair(model, decoder, ids, config, start=10)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    assert decoder.compiled_steps == len(a) and decoder.eager_steps == 0
    assert compiled.rebases == eager.rebases > 0 and compiled.evicted.tolist() == eager.evicted.tolist()
    assert compiled.tokens_seen.tolist() == eager.tokens_seen.tolist()
    for x, y in zip(eager.layers, compiled.layers):  # the same state, column for column
        torch.testing.assert_close(x.keys[:, :, : x.n], y.keys[:, :, : y.n], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(x.values[:, :, : x.n], y.values[:, :, : y.n])
    # after compiled steps the cache goes on eagerly (a prefill chunk, the next turn) exactly as the eager one
    more = torch.randint(1, 128, (1, 12), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(prefill(model, compiled, more), prefill(model, eager, more), atol=1e-4, rtol=1e-4)


def test_states_the_graph_cannot_take_decode_eagerly_with_the_same_result(home):
    model = peaky("llama", 4.0)
    config = SinkConfig(4, 20)
    decoder = CompiledDecoder(model, config, backend="eager")
    few, ref = _twins(model, config, torch.randint(1, 128, (1, 3), generator=torch.Generator().manual_seed(3)))
    # fewer tokens than sinks: eager
    out = decoder.step(few, torch.tensor([5]))
    torch.testing.assert_close(out, model(input_ids=torch.tensor([[5]]), cache=ref).logits[:, -1])
    assert decoder.eager_steps == 1 and decoder.compiled_steps == 0
    other = SinkCache(config=SinkConfig(4, 30))  # another size
    prefill(model, other, torch.randint(1, 128, (1, 8)))
    assert not decoder.can_compile(other)
    padded = SinkCache(config=config)
    prefill(model, padded, torch.randint(1, 128, (2, 8)), attention_mask=torch.tensor([[0] * 3 + [1] * 5, [1] * 8]))
    assert not decoder.can_compile(padded)
    rerotating = SinkCache(config=SinkConfig(4, 20, rerotate=True))
    prefill(model, rerotating, torch.randint(1, 128, (1, 8)))
    assert not decoder.can_compile(rerotating)


def test_a_batch_without_padding_decodes_in_one_graph(home):
    model = peaky("qwen2", 4.0)
    config = SinkConfig(2, 12)
    decoder = CompiledDecoder(model, config, backend="eager")
    ids = torch.randint(1, 128, (3, 40), generator=torch.Generator().manual_seed(4))
    eager, compiled = _twins(model, config, ids[:, :6])
    for t in range(6, 40):
        ref = model(input_ids=ids[:, t : t + 1], cache=eager).logits[:, -1]
        torch.testing.assert_close(decoder.step(compiled, ids[:, t]), ref, atol=1e-4, rtol=1e-4)
    assert decoder.compiled_steps == 34


def test_models_it_does_not_cover_are_refused_in_one_line(home, monkeypatch):
    with pytest.raises(TenfoldError, match="sliding-window layers"):
        CompiledDecoder(tiny("gemma3"), SinkConfig(4, 20))
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setenv("PATH", str(home))  # no compiler on the PATH
    with pytest.raises(TenfoldError, match="no C\\+\\+ compiler"):
        CompiledDecoder(tiny("llama"), SinkConfig(4, 20))


def test_inductor_step_matches_eager_and_keeps_its_artefacts(home):
    model = peaky("llama", 4.0)
    config = SinkConfig(4, 20, rebase_at=44)
    decoder = CompiledDecoder(model, config)
    lines = []
    decoder.warm_up(say=lines.append)
    assert "first time" in lines[0] and decoder.compile_seconds > 0
    ids = torch.randint(1, 128, (70,), generator=torch.Generator().manual_seed(5))
    a, b, eager, compiled = _nll_pair(model, decoder, ids, config, start=10)
    assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4 and compiled.rebases == eager.rebases > 0
    folder = artefact_dir(decoder.key)
    assert folder.is_dir() and (folder / "inductor").is_dir() and os.environ["TORCHINDUCTOR_CACHE_DIR"].startswith(
        str(home))
    [kept] = cached_artefacts()
    assert kept["cache_size"] == 24 and kept["weights"] == "float32" and kept["torch"] == torch.__version__
    assert kept["bytes"] > 0 and json.loads((folder / "key.json").read_text())["vector_level"] == kept["vector_level"]
    again = CompiledDecoder(model, config)
    lines.clear()
    again.warm_up(say=lines.append)
    assert "from the cache" in lines[0]


@pytest.mark.slow
def test_bundled_model_compiled_nll_matches_eager(lm):
    """The real model in float32 through inductor: to 1e-4 in NLL over a fill, evictions and a re-base (compiled
    into the real $TENFOLD_HOME, where `chat --compile --dtype float32 --window 60` finds it again)."""
    model, tok = lm
    from tenfold.data import austen

    ids = tok(austen("emma")[:4000], return_tensors="pt").input_ids[0, :220]
    config = SinkConfig(4, 60, rebase_at=150)
    decoder = CompiledDecoder(model, config)
    a, b, eager, compiled = _nll_pair(model, decoder, ids, config, start=20)
    assert abs(sum(a) / len(a) - sum(b) / len(b)) < 1e-4 and max(abs(x - y) for x, y in zip(a, b)) < 1e-3
    assert compiled.rebases == eager.rebases > 0 and math.isfinite(sum(b))


def _chat(*flags, stdin):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tenfold.cli", "chat", "--dtype", "float32", "--sinks", "4",
                           "--window", "60", "--max-new-tokens", "40", *flags], input=stdin, capture_output=True,
                          text=True, timeout=900)


@pytest.mark.slow
def test_chat_compile_flag_decodes_compiled_with_the_eager_replies():
    """`tenfold chat --compile` says it compiles, /stats says compiled, and greedy replies (two turns, evicting past
    64 tokens) are the eager chat's; with --memory it says in one line that it stays eager."""
    turns = "Tell me about the sea.\nAnd about mountains?\n/stats\n"
    eager, compiled = _chat(stdin=turns), _chat("--compile", stdin=turns)
    assert eager.returncode == 0 and compiled.returncode == 0, compiled.stderr
    assert "compiling the decode step" in compiled.stderr and "compiling" not in eager.stderr
    *replies, stats = compiled.stdout.strip().splitlines()
    *eager_replies, eager_stats = eager.stdout.strip().splitlines()
    assert replies == eager_replies
    stats, eager_stats = json.loads(stats), json.loads(eager_stats)
    assert stats["decode"] == "compiled" and eager_stats["decode"] == "eager" and stats["evicted"] > 0
    memory = _chat("--compile", "--memory", stdin="Hello\n/stats\n")
    assert memory.returncode == 0 and "--compile is not used with --memory" in memory.stderr
    assert json.loads(memory.stdout.strip().splitlines()[-1])["decode"] == "eager"


def test_unfilled_columns_holding_nan_do_not_leak_into_the_step(home):
    """The compiled step reads every column of the full-size buffers (weight 0 past the filled ones): buffers are
    allocated zeroed, so what uninitialised memory held (NaN) never reaches the logits."""
    model = tiny("llama")
    config = SinkConfig(4, 20)
    decoder = CompiledDecoder(model, config, backend="eager")
    eager, compiled = _twins(model, config, torch.randint(1, 128, (1, 8), generator=torch.Generator().manual_seed(6)))
    for layer in compiled.layers:
        assert not layer.keys[:, :, layer.n:].any() and not layer.values[:, :, layer.n:].any()
    ref = model(input_ids=torch.tensor([[5]]), cache=eager).logits[:, -1]
    torch.testing.assert_close(decoder.step(compiled, torch.tensor([5])), ref, atol=1e-5, rtol=1e-5)


def test_an_unwritable_home_falls_back_in_one_line(home):
    from tenfold.streaming.compiled import compiled_or_none

    model = tiny("llama")
    lines = []
    (home / "compiled").write_text("not a folder")
    assert compiled_or_none(model, SinkConfig(3, 19), lines.append) is None
    assert lines[-1].startswith("cannot keep the compiled step in ") and lines[-1].endswith(": decoding eagerly")


def test_doctor_lists_kept_steps_and_survives_broken_key_files(home):
    from tenfold import doctor

    for name, text in {"list": "[1, 2]", "empty": "", "partial": "{}", "options": '{"model": "m", "weights": "int4", '
                       '"torch": "2", "vector_level": "AVX2", "cache_size": 8, "options": "oops"}'}.items():
        (home / "compiled" / name).mkdir(parents=True)
        (home / "compiled" / name / "key.json").write_text(text)
    report = doctor.report()
    assert len(report["compiled"]["cached"]) == 4
    text = doctor.render(report)
    assert text.count("(unreadable key.json)") == 3 and "m int4 cache 8, torch 2, AVX2" in text


@pytest.mark.slow
def test_chat_with_a_broken_compiler_says_so_and_decodes_eagerly(tmp_path):
    """A compiler that is found but builds nothing (CXX=/bin/false; inductor reads it in a fresh process): one line,
    then the eager chat, exit 0."""
    import subprocess
    import sys

    from tenfold import home

    (tmp_path / "models").symlink_to(os.path.join(home(), "models"))  # the converted model, not its compiled steps
    env = {**os.environ, "TENFOLD_HOME": str(tmp_path), "CXX": "/bin/false"}
    env.pop("TORCHINDUCTOR_CACHE_DIR", None)
    res = subprocess.run([sys.executable, "-m", "tenfold.cli", "chat", "--compile", "--dtype", "float32", "--sinks",
                          "3", "--window", "21", "--max-new-tokens", "5"], input="Hello\n/stats\n",
                         capture_output=True, text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr
    assert "tenfold chat: compiling the decode step failed (" in res.stderr and "Traceback" not in res.stderr
    assert json.loads(res.stdout.strip().splitlines()[-1])["decode"] == "eager"
