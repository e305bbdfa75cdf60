"""Space and time probes: metrics on hand-computed cases, last-token extraction edge cases, probes on synthetic signals."""
import re

import numpy as np
import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.probes.activations import extract, fill, last_name_token
from tenfold.probes.datasets import EntityDataset, held_out, load_dataset
from tenfold.probes.fit import best, best_neurons, fit_layers, haversine_km, proximity_error


def test_haversine_hand_computed():
    # A quarter of the equator, pole to equator, and Paris-London (about 344 km).
    assert haversine_km(np.array([[0, 0]]), np.array([[90, 0]]))[0] == pytest.approx(np.pi / 2 * 6371, rel=1e-9)
    assert haversine_km(np.array([[10, 90]]), np.array([[10, 0]]))[0] == pytest.approx(np.pi / 2 * 6371, rel=1e-9)
    assert haversine_km(np.array([[2.3522, 48.8566]]), np.array([[-0.1276, 51.5072]]))[0] == pytest.approx(344, abs=2)


def test_proximity_error_hand_computed():
    true = np.array([[0.0], [10.0], [20.0], [30.0]])
    assert proximity_error(true, true, "time") == 0.0
    # Entity 0 predicted at 19: true 10 (d=9), 20 (d=1) and 30 (d=11) are all closer than its own 0 (d=19).
    pred = np.array([[19.0], [10.0], [20.0], [30.0]])
    assert proximity_error(true, pred, "time") == pytest.approx((3 / 3) / 4)
    # Predicted at 12: 10 (d=2) and 20 (d=8) are closer than its own 0 (d=12); 30 (d=18) is not.
    pred[0, 0] = 12.0
    assert proximity_error(true, pred, "time") == pytest.approx((2 / 3) / 4)
    places = np.array([[0.0, 0.0], [50.0, 0.0], [100.0, 0.0]])
    swapped = places[[2, 1, 0]]
    # 0 and 2 swapped: each has both others closer to its prediction (2/2); the middle one is exact.
    assert proximity_error(places, swapped, "space") == pytest.approx((1 + 0 + 1) / 3)


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from tenfold.models.lm import cached_dir, convert_bundled, is_cached

    if not is_cached():
        convert_bundled()
    return AutoTokenizer.from_pretrained(cached_dir())


@pytest.mark.parametrize("template, name", [
    ("{name}", "Paris"), ("{name}", "Ouagadougou"), ("{name}", " leading space"), ("{name}", "São Paulo"),
    ("What are the lat/lon coordinates of {name}", "New York City"),
    ("When was {name} released?", "Gone Girl"), ("When was {name} released?", "E.T."),
    ("{name}", "北京"), ("In what year did this happen: {name}", '"Mein Kampf" is published'),
])
def test_last_token_is_the_last_token_of_the_name(tok, template, name):
    text, start, end = fill(template, name)
    enc = tok(text, return_offsets_mapping=True)
    i = last_name_token(enc["offset_mapping"], start, end)
    prefix = tok.decode(enc["input_ids"][: i + 1])
    assert prefix.rstrip().endswith(name.strip()[-1]) or name.strip()[-1] in tok.decode(enc["input_ids"][i])
    # Nothing of the name comes after the chosen token.
    assert all(a >= end for a, b in enc["offset_mapping"][i + 1 :] if b > a)


def test_extraction_ignores_padding_side_and_batching(tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)).eval()
    names = ["Paris", "Rio de Janeiro", "Ulaanbaatar", "A"]
    one_by_one = np.concatenate([extract(model, tok, [n], batch_size=1) for n in names])
    for side in ("left", "right"):
        tok.padding_side = side
        batched = extract(model, tok, names, batch_size=4)
        np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.shape == (4, 3, 32)
    with pytest.raises(TenfoldError):
        fill("no placeholder", "x")


def _synthetic(n=600, dim=40, layers=3, seed=0):
    rng = np.random.default_rng(seed)
    entities = [f"entity {i}" for i in range(n)]
    lonlat = np.column_stack([rng.uniform(-180, 180, n), rng.uniform(-60, 70, n)])
    acts = rng.normal(size=(n, layers, dim))
    acts[:, 2, :2] += lonlat / np.array([20.0, 10.0])  # layer 2 carries the map linearly, layer 0 does not
    acts[:, 2, 5] = lonlat[:, 1] / 30 + 0.05 * rng.normal(size=n)  # one "latitude neuron"
    return entities, lonlat, acts


def test_probe_recovers_a_linear_signal_and_shuffled_targets_do_not():
    entities, lonlat, acts = _synthetic()
    is_test = np.array([held_out(e) for e in entities])
    rows = fit_layers(acts, lonlat, is_test, "space")
    assert best(rows)["layer"] == 2 and best(rows)["r2"] > 0.9 and rows[0]["r2"] < 0.1
    assert best(rows)["proximity_error"] < 0.1
    shuffled = fit_layers(acts[:, 2:3], lonlat, is_test, "space", shuffle_seed=0)[0]
    assert shuffled["r2"] < 0.05
    neurons = best_neurons(acts[:, 2], lonlat, is_test)
    top_lat = max((n for n in neurons if n["target"] == 1), key=lambda n: n["test_r2"])
    assert top_lat["neuron"] == 5 and top_lat["test_r2"] > 0.9


def test_held_out_split_is_fixed_and_about_a_fifth():
    names = [f"name {i}" for i in range(5000)]
    share = np.mean([held_out(n) for n in names])
    assert 0.18 < share < 0.22 and held_out("Paris") == held_out("Paris")
    data = EntityDataset("x", "time", names[:100], np.arange(100.0)[:, None], ["a"] * 100)
    assert list(data.subset(10).is_test) == list(data.is_test[:10])


@pytest.mark.slow
def test_real_datasets_have_bare_unambiguous_names():
    world = load_dataset("world-places")
    assert len(world) > 20_000 and len(set(world.entities)) == len(world)
    assert not any("," in e for e in world.entities[:2000])
    assert {"Paris", "Tokyo"} <= set(world.entities[:500])
    assert "Springfield" not in load_dataset("us-places").entities
    films = load_dataset("films")
    assert not any(any(str(y) in t for y in range(1940, 2015)) for t in films.entities)
    people = load_dataset("historical-figures")
    assert len(people) > 300 and "Abraham Lincoln" in people.entities
    assert people.targets[people.entities.index("Abraham Lincoln"), 0] == 1809
    events = load_dataset("history-events")
    assert len(events) > 200 and not any(re.search(r"\d{3,4}", e) for e in events.entities)
    with pytest.raises(TenfoldError):
        load_dataset("atlantis")


def _cli(*args):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tenfold", "probes", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_probes_fit_cli_json_shape():
    import json

    r = _cli("fit", "--dataset", "historical-figures", "--limit", "150", "--json", "--no-random-baseline")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert {"best_layer", "r2", "spearman", "proximity_error", "baseline_r2", "layer0_r2"} <= set(out)
    assert 0 <= out["best_layer"] <= 30 and out["baseline_r2"] < 0.2


@pytest.mark.parametrize("args, message", [
    (["fit", "--dataset", "atlantis"], "invalid choice"),
    (["fit", "--dataset", "films", "--prompt", "coords"], "has no prompt"),
    (["fit", "--dataset", "films", "--limit", "3"], "--limit must be >= 20"),
])
def test_probes_cli_bad_input_is_one_line(args, message):
    r = _cli(*args)
    assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_activation_cache_is_per_dtype(tmp_path, monkeypatch):
    """A bfloat16 model (the GPU default) must not read the float32 model's cached activations, nor the reverse;
    float32 keeps the key it always had."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tenfold.probes.activations import cache_path

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path))
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    f32 = cache_path(model, "films", "bare", ["A", "B"])
    assert f32.name.startswith("films-bare-2-") and "float" not in f32.name
    bf16 = cache_path(model.to(torch.bfloat16), "films", "bare", ["A", "B"])
    assert bf16 != f32 and bf16.name.endswith("-bfloat16.npy")
