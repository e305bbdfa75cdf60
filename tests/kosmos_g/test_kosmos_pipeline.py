"""Kosmos-G assembled: scoring generated images, the cached foundation, save/load, evaluation, and the CLI."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.kosmos_g.decoder import TextConditionedDecoder, small_unet
from tenfold.kosmos_g.scoring import attribute_scores, clip_scores, mean_scores
from tenfold.kosmos_g.tasks import decoder_scenes, instructions, target_caption
from tenfold.vision.world import Obj, Scene, parse, render, same_objects


def test_attribute_scores_read_generated_images_exactly():
    target = Scene([Obj("circle", "red", "large", 1, 0), Obj("star", "blue", "large", 1, 2)], "black")
    assert attribute_scores(render(target, 32), target) == {"colour": 1.0, "shape": 1.0, "position": 1.0,
                                                            "count": 1.0, "exact": 1.0}
    recoloured = Scene([Obj("circle", "green", "large", 1, 0), Obj("star", "blue", "large", 1, 2)], "black")
    s = attribute_scores(render(recoloured, 32), target)
    assert s["colour"] == 0.5 and s["shape"] == 1.0 and s["position"] == 1.0 and s["exact"] == 0.0
    extra = Scene(target.objects + [Obj("square", "white", "large", 0, 0)], "black")
    s = attribute_scores(render(extra, 32), target)
    assert s["colour"] == 1.0 and s["position"] == 0.0 and s["count"] == 0.0 and s["exact"] == 0.0
    s = attribute_scores(render(Scene([], "black"), 32), target)
    assert s == {"colour": 0.0, "shape": 0.0, "position": 0.0, "count": 0.0, "exact": 0.0}
    assert mean_scores([{"a": 1.0}, {"a": 0.0}]) == {"a": 0.5} and mean_scores([]) == {}


def test_decoder_data_and_captions_match_the_targets():
    batch = decoder_scenes(10, seed=3)
    assert len(batch) == 10 and all(s.background == "black" and 1 <= len(s.objects) <= 3 for s in batch)
    assert len(batch[3].objects) == 3 and all(len(s.objects) <= 2 for s in batch[5:])  # a row of three: a target
    targets = [i.target for i in instructions(5, "train", seed=3 + 17)]
    assert [t.objects for t in batch[:5]] == [t.objects for t in targets]
    for i in instructions(8, "test"):
        caption = target_caption(i)
        assert all(o.colour in caption and o.shape in caption for o in i.target.objects)
        assert same_objects(parse(render(i.target, 32)), i.target)
    assert target_caption(instructions(3, "test")[2]).endswith("in the centre")


def test_prediction_types_and_decoder_storage(tmp_path):
    with pytest.raises(TenfoldError, match="unknown prediction type"):
        TextConditionedDecoder(small_unet(16, 32, (16, 32, 32)), prediction_type="x0")
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    cond = torch.randn(2, 32, 16)
    for kind in ("epsilon", "sample", "v_prediction"):
        dec = TextConditionedDecoder(small_unet(16, 32, (16, 32, 32)), prediction_type=kind)
        assert torch.isfinite(dec.loss(x, cond, generator=torch.Generator().manual_seed(0)))
    dec.save(tmp_path / "dec")
    back = TextConditionedDecoder.load(tmp_path / "dec")
    assert back.prediction_type == "v_prediction" and back.image_size == 32
    assert torch.equal(dec.sample(cond, cond[:1], steps=2, seed=1), back.sample(cond, cond[:1], steps=2, seed=1))
    with pytest.raises(TenfoldError, match="no image decoder"):
        TextConditionedDecoder.load(tmp_path)


TINY = dict(clip_steps=2, decoder_steps=2, decoder_channels=(16, 32, 32), vlm_steps=1, vlm_batch=2, image_tokens=4)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny Kosmos-G built by the pipeline (foundation cached in a private TENFOLD_HOME)."""
    from tenfold.kosmos_g.model import KosmosG
    from tenfold.kosmos_g.pipeline import FoundationSettings, foundation, train_aligner

    mp = pytest.MonkeyPatch()
    mp.setenv("TENFOLD_HOME", str(tmp_path_factory.mktemp("home")))
    settings = FoundationSettings(**TINY)
    clip, tok, dec, vlm, info = foundation(settings)
    assert info["source"] == "trained in this run" and len(info["losses"]["decoder"]) == 2
    model = KosmosG.assemble(clip, tok, dec, vlm, width=32, layers=1)
    losses = train_aligner(model, 2, 2, align_batch=4, instruct_batch=2)
    assert len(losses["align"]) == 2 and len(losses["instruct"]) == 2
    yield model, settings
    mp.undo()


@pytest.mark.slow
def test_foundation_is_cached_whole_and_the_model_round_trips(tiny_model, tmp_path):
    from tenfold.kosmos_g.model import KosmosG
    from tenfold.kosmos_g.pipeline import foundation, foundation_dir, train_aligner

    model, settings = tiny_model
    where = foundation_dir(settings)
    assert (where / "done.json").exists() and not list(where.parent.glob(where.name + ".partial*"))
    from tenfold.vision.cache import cached_vlm

    _, _, vlm, shared = cached_vlm(settings.recipe())  # the CLIP + MLLM part went to the shared store
    assert shared["source"].startswith("cached in")
    clip, _, dec, mllm, info = foundation(settings)
    assert info["source"].startswith("cached in")
    # both stores hold the MLLM as trained before Kosmos-G's instruction tuning fine-tuned the model's copy
    stored = [p for p in vlm.projector.state_dict().values()]
    assert all(torch.equal(a, b) for a, b in zip(stored, mllm.projector.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(stored, model.vlm.projector.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(dec.unet.state_dict().values(),
                                                  model.decoder.unet.state_dict().values()))
    subjects = [i.subject_images() for i in instructions(2, "test")]
    prompts = [i.prompt for i in instructions(2, "test")]
    first = model.generate(prompts, subjects, steps=2, seed=5)
    assert len(first) == 2 and first[0].size == (32, 32)
    model.save(tmp_path / "kg", {"note": "test"})
    back = KosmosG.load(tmp_path / "kg", lm=model.vlm.lm)
    assert KosmosG.info(tmp_path / "kg")["note"] == "test"
    again = back.generate(prompts, subjects, steps=2, seed=5)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    with pytest.raises(TenfoldError, match="placeholder"):
        model.generate(["<image> and <image> side by side"], [subjects[0][:1]], steps=2)
    with pytest.raises(TenfoldError, match="no Kosmos-G model"):
        KosmosG.load(tmp_path)
    with pytest.raises(TenfoldError, match="at least one aligner stage"):
        train_aligner(model, 0, 0)


@pytest.mark.slow
def test_evaluation_scores_every_method_on_the_same_instructions(tiny_model):
    from tenfold.kosmos_g.evaluate import METHODS, generate_all, score_all

    model, _ = tiny_model
    gens = generate_all(model, "unseen", 4, steps=2)
    assert [i.task for i in gens["instructions"]] == ["side by side", "above", "recolour", "in a row"]
    assert gens["single subject"][2] is None and gens["single subject"][3] is not None
    assert gens["Kosmos-G"][3].size == (32, 32)  # three subject images in one prompt
    table = score_all(model, gens)
    assert set(table) == set(METHODS)
    assert table["rendered target"]["exact"] == 1.0 and table["single subject"]["n"] == 3
    assert set(table["Kosmos-G"]["per task"]) == {"side by side", "above", "recolour", "in a row"}
    for entry in table.values():
        assert -1 <= entry["clip_i"] <= 1 and -1 <= entry["clip_t"] <= 1
    same = clip_scores(model.clip, model.clip_tokenizer, gens["rendered target"][:1],
                       [[gens["rendered target"][0]]], ["x"])
    assert same["clip_i"] == pytest.approx(1.0, abs=1e-3)


def _kosmos(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "tenfold", "kosmos-g", *args], capture_output=True, text=True,
                          timeout=timeout, env=env)


@pytest.mark.slow
def test_cli_train_then_generate(tmp_path, monkeypatch, capsys):
    """The real CLI in subprocesses for train and generate; its error paths in-process (each subprocess pays the
    interpreter start and imports again)."""
    import os

    from tenfold.cli import main
    from tenfold.vision.world import Obj, Scene, render

    monkeypatch.setenv("TENFOLD_HOME", str(tmp_path / "home"))
    env = {**os.environ, "TENFOLD_HOME": str(tmp_path / "home")}
    model = tmp_path / "model"
    run = _kosmos("train", "--out", str(model), "--clip-steps", "2", "--decoder-steps", "1", "--vlm-steps", "0",
                  "--align-steps", "1", "--instruct-steps", "1", "--n-test", "0", "--json", env=env)
    assert run.returncode == 0, run.stderr
    assert "trained in this run" in json.loads(run.stdout)["foundation"]
    for k, colour in enumerate(("red", "blue")):
        render(Scene([Obj("star", colour, "large", 1, 1)], "black"), 64).save(tmp_path / f"s{k}.png")
    subjects = ["--image", str(tmp_path / "s0.png"), "--image", str(tmp_path / "s1.png")]
    gen = _kosmos("generate", "--model", str(model), "--prompt", "<image> above <image>", *subjects,
                  "--out", str(tmp_path / "out" / "x.png"), "--n", "2", "--steps", "2", "--size", "64", "--json",
                  env=env)
    assert gen.returncode == 0, gen.stderr
    got = json.loads(gen.stdout)
    assert got["images"] == [str((tmp_path / "out" / f"x-{k}.png").resolve()) for k in range(2)]
    assert got["n"] == 2 and got["steps"] == 2 and got["size"] == 64 and len(got["subjects"]) == 2
    from PIL import Image

    assert [Image.open(tmp_path / "out" / f"x-{k}.png").size for k in range(2)] == [(64, 64)] * 2
    gen_bad = [(["--prompt", "<image> above <image>", "--image", str(tmp_path / "s0.png")],
                "has 2 <image> placeholder(s) but 1"),
               (["--prompt", "<image> above", "--image", str(tmp_path / "nope.png")], "no image at"),
               (["--prompt", "a red star", "--text-only", "--image", str(tmp_path / "s0.png")], "--text-only takes no"),
               (["--prompt", "  "], "the prompt is empty")]
    bad = [(["generate", "--model", str(model), *args, "--out", str(tmp_path / "y.png")], message)
           for args, message in gen_bad]
    bad += [(["generate", "--model", str(tmp_path), "--prompt", "x", "--out", str(tmp_path / "y.png")],
             "no Kosmos-G model"),
            (["train", "--out", str(model)], "already holds"),
            (["train", "--out", str(tmp_path / "m2"), "--align-steps", "0", "--instruct-steps", "0"],
             "at least one aligner stage"),
            (["train", "--out", str(tmp_path / "m2"), "--caption-anchor", "nan"], "--caption-anchor finite")]
    capsys.readouterr()
    for args, message in bad:
        assert main(["kosmos-g", *args]) != 0
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "y.png").exists() and not (tmp_path / "m2").exists()
