"""The procedural visual world: deterministic rendering, exact parsing, held-out combinations, captions, CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest

from tenfold.errors import TenfoldError
from tenfold.vision.world import (COLOURS, HELD_OUT, Obj, Scene, parse, render, same_objects, sample_scene, scenes)


def test_rendering_is_deterministic_by_seed():
    a, b = sample_scene(7), sample_scene(7)
    assert a == b and np.array_equal(np.asarray(render(a)), np.asarray(render(b)))
    assert any(sample_scene(7).objects != sample_scene(s).objects for s in range(8, 12))
    assert render(a, 96).size == (96, 96)


@pytest.mark.parametrize("split, size", [("train", 64), ("test", 64), ("unseen", 64), ("train", 128)])
def test_the_parser_recovers_every_object(split, size):
    for scene in scenes(60, split, seed=1):
        parsed = parse(render(scene, size))
        assert same_objects(scene, parsed), (scene.description(), parsed.description())
        assert parsed.background == scene.background


def test_held_out_pairs_never_appear_in_training_and_always_in_unseen():
    pairs = lambda s: {(o.colour, o.shape) for o in s.objects}  # noqa: E731
    assert not any(pairs(s) & HELD_OUT for s in scenes(300, "train") + scenes(100, "test"))
    assert all(pairs(s) & HELD_OUT for s in scenes(100, "unseen"))
    train_seeds = {s.seed for s in scenes(50, "train")}
    assert not train_seeds & {s.seed for s in scenes(50, "test")}


def test_captions_and_relations_describe_the_scene():
    scene = Scene([Obj("circle", "red", "small", 0, 0), Obj("square", "blue", "large", 2, 2)], "gray", seed=3)
    rels = scene.relations()
    assert (0, "left of", 1) in rels and (0, "above", 1) in rels and (1, "below", 0) in rels
    caps = scene.captions()
    assert caps[0] == "a small red circle and a large blue square"
    assert any(" of " in c or "above" in c or "below" in c for c in caps[2:])
    assert len(set(caps)) == len(caps) and scene.captions() == caps
    for s in scenes(20):
        assert all(o.colour in s.captions()[0] and o.shape in s.captions()[0] for o in s.objects)


def test_the_parser_is_exact_on_colours_and_an_empty_scene():
    img = render(Scene([], "navy"))
    assert parse(img).objects == []
    arr = np.asarray(render(Scene([Obj("star", "yellow", "large", 1, 1)])))
    assert tuple(arr[32, 32]) == COLOURS["yellow"]


def test_bad_scenes_and_images_are_clear_errors():
    from PIL import Image

    with pytest.raises(TenfoldError, match="split"):
        sample_scene(0, "validation")
    with pytest.raises(TenfoldError, match="32"):
        render(sample_scene(0), 16)
    with pytest.raises(TenfoldError, match="colour"):
        render(Scene([Obj("circle", "magenta", "small", 0, 0)]))
    with pytest.raises(TenfoldError, match="square"):
        parse(Image.new("RGB", (64, 40)))
    with pytest.raises(TenfoldError, match="scene"):
        Scene.from_dict({"objects": [{"shape": "circle"}]})


def cli(*args):
    return subprocess.run([sys.executable, "-m", "tenfold", "vision", *args], capture_output=True, text=True, timeout=120)


def test_cli_world_and_parse(tmp_path):
    r = cli("world", "--n", "5", "--split", "unseen", "--out", str(tmp_path / "w"))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (tmp_path / "w" / "scenes.jsonl").read_text().splitlines()]
    assert len(rows) == 5 and all((tmp_path / "w" / row["image"]).exists() and row["captions"] for row in rows)
    r = cli("parse", str(tmp_path / "w" / rows[0]["image"]), "--json")
    assert r.returncode == 0, r.stderr
    assert same_objects(Scene.from_dict(json.loads(r.stdout)), Scene.from_dict(rows[0]))
    (tmp_path / "bad.png").write_text("not an image")
    for args, message in ((["parse", str(tmp_path / "bad.png")], "not a readable image"),
                          (["parse", str(tmp_path / "missing.png")], "no image"),
                          (["world", "--n", "2", "--size", "8", "--out", str(tmp_path / "x")], "between 32 and 4096 pixels")):
        r = cli(*args)
        assert r.returncode != 0 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_few_clip_steps_lower_the_loss_and_the_model_reloads(tmp_path):
    import torch
    from transformers import AutoTokenizer, CLIPModel

    from tenfold.vision.clip import embed, small_clip, train_clip, world_tokenizer

    tok = world_tokenizer()
    ids = tok(["a small red circle left of a large blue square"]).input_ids[0]
    assert tok.unk_token_id not in ids and ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    model = small_clip(len(tok), width=64, layers=2)
    losses = train_clip(model, tok, steps=40, batch_size=16, lr=2e-3)
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.2
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    again, tok2 = CLIPModel.from_pretrained(tmp_path).eval(), AutoTokenizer.from_pretrained(tmp_path)
    images, texts = [render(s) for s in scenes(4, "test")], [s.captions()[0] for s in scenes(4, "test")]
    a, b = embed(model, tok, images, texts), embed(again, tok2, images, texts)
    assert torch.allclose(a["image"], b["image"], atol=1e-5) and torch.allclose(a["text"], b["text"], atol=1e-5)
    with pytest.raises(TenfoldError, match="batch size"):
        train_clip(model, tok, steps=1, batch_size=1)


def test_an_interrupted_world_leaves_nothing_half_made_and_a_rerun_works(tmp_path):
    """Ctrl-C in `vision world` (SIGINT while it writes PNGs): exit 130, no --out folder and no staging folder
    left; a rerun into the same --out then writes the whole world. A folder holding PNGs without scenes.jsonl (what
    an interrupted run left before) is refused with one line, and replaced with --force."""
    import os
    import signal
    import time

    out = tmp_path / "w"
    staging = tmp_path / ".w.partial"
    proc = subprocess.Popen([sys.executable, "-m", "tenfold", "vision", "world", "--n", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (staging.is_dir() and len(list(staging.glob("*.png"))) >= 20):
            time.sleep(0.1)
        assert len(list(staging.glob("*.png"))) >= 20, "the world never started writing into its staging folder"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "tenfold: interrupted"
    assert not out.exists() and not staging.exists() and os.listdir(tmp_path) == []

    r = cli("world", "--n", "3", "--out", str(out))
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ["scenes.jsonl", "train-000000.png", "train-000001.png",
                                                       "train-000002.png"]
    r = cli("world", "--n", "3", "--out", str(out))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "already holds a world" in r.stderr

    half = tmp_path / "half"
    half.mkdir()
    (half / "train-000000.png").write_bytes((out / "train-000000.png").read_bytes())
    r = cli("world", "--n", "2", "--out", str(half))
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "half-made world" in r.stderr
    r = cli("world", "--n", "2", "--out", str(half), "--force")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in half.iterdir()) == ["scenes.jsonl", "train-000000.png", "train-000001.png"]

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    r = cli("world", "--n", "2", "--out", str(mine), "--force")
    assert r.returncode == 1 and "other files" in r.stderr and (mine / "notes.txt").read_text() == "keep me"
