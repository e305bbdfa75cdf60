"""The small VLM: questions with exact answers, image placeholders, training, saving, the engine path, and the CLI."""
import copy
import json
import subprocess
import sys

import pytest
import torch

from tenfold.streaming.config import SinkConfig

from tenfold.errors import TenfoldError
from tenfold.vision.questions import KINDS, ask, caption_recall, is_correct, normalise, questions
from tenfold.vision.world import Obj, Scene, render, scenes


def test_questions_have_exact_answers():
    qs = questions(200, "train", kinds=KINDS, seed=3)
    assert {q.kind for q in qs} == set(KINDS)
    for q in qs:
        objs = q.scene.objects
        if q.kind == "colour":
            shape = q.text.split()[-1].rstrip("?")
            assert [o.colour for o in objs if o.shape == shape] == [q.answer]
        elif q.kind == "shape":
            colour = q.text.split()[-2]
            assert [o.shape for o in objs if o.colour == colour] == [q.answer]
        elif q.kind == "count":
            assert q.answer == str(len(objs))
        elif q.kind == "position":
            words = q.text.rstrip("?").split()
            a = next(o for o in objs if (o.colour, o.shape) == (words[2], words[3]))
            b = next(o for o in objs if (o.colour, o.shape) == (words[-2], words[-1]))
            expected = {"left": a.col < b.col, "right": a.col > b.col, "above": a.row < b.row, "below": a.row > b.row}
            assert expected[q.answer] and q.answer in words
    assert questions(20, "test", seed=1) == questions(20, "test", seed=1)


def test_curriculum_questions_use_single_object_scenes():
    single = questions(30, "train", kinds=("colour", "shape", "caption"), seed=2, max_objects=1)
    assert all(len(q.scene.objects) == 1 for q in single)
    assert {len(q.scene.objects) for q in questions(60, "train", seed=2)} == {1, 2, 3, 4}
    with pytest.raises(TenfoldError, match="could only make"):
        questions(5, "train", kinds=("position",), max_objects=1)


def test_ambiguous_questions_are_not_asked():
    import random

    twins = Scene([Obj("star", "red", "small", 0, 0), Obj("star", "blue", "large", 1, 1)])
    assert ask(twins, "colour", random.Random(0)) is None  # two stars: "the star" is ambiguous
    assert ask(twins, "shape", random.Random(0)).answer == "star"
    with pytest.raises(TenfoldError, match="unknown question kind"):
        questions(3, kinds=["texture"])


def test_answer_scoring():
    assert normalise("Three.") == "3" and normalise("  Red, I think") == "red" and normalise("") == ""
    scene = Scene([Obj("star", "red", "small", 0, 0), Obj("circle", "blue", "large", 1, 1)])
    assert caption_recall("a small red star and a large blue circle", scene) == 1.0
    assert caption_recall("a small red star and a small blue circle", scene) == 0.5
    q = ask(scene, "count", None)
    assert is_correct(q, "2") == 1.0 and is_correct(q, "two objects") == 1.0 and is_correct(q, "The answer is 2") == 0.0


# -- the model ----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vlm(lm):
    from tenfold.vision.clip import small_clip, world_tokenizer
    from tenfold.vision.vlm import build_vlm

    model, tok = lm
    clip = small_clip(len(world_tokenizer()), seed=0)
    return build_vlm(clip, lm=copy.deepcopy(model), tokenizer=tok, image_tokens=4, lora_rank=2)


@pytest.mark.slow
def test_placeholders_expand_and_must_match_the_images(vlm, lm):
    assert "<image>" not in lm[1].get_vocab()  # the shared tokenizer was not changed
    ids = vlm.prompt_ids([{"role": "user", "content": "<image>\n<image>\nSame colour?"}])
    assert vlm.count_images(ids) == 2 and ids.count(vlm.image_token_id) == 2 * vlm.image_tokens
    assert "visual assistant" in vlm.tokenizer.decode(ids)  # the training system prompt is added when none is given
    images = [render(s) for s in scenes(2, "test")]
    with pytest.raises(TenfoldError, match="2 <image> placeholder.*1 image"):
        vlm.generate([ids], [images[:1]])
    with pytest.raises(TenfoldError, match="placeholder"):
        vlm.ask(images, "<image> What colour is the star?")
    feats = vlm.encode_images(vlm.pixel_values(images))
    assert feats.shape == (2, vlm.image_tokens, lm[0].config.hidden_size)
    embeds = vlm.embed(torch.tensor([ids]), feats)
    slots = torch.tensor(ids) == vlm.image_token_id
    assert torch.equal(embeds[0, slots], feats.reshape(-1, feats.shape[-1]).to(embeds.dtype))


@pytest.mark.slow
def test_a_few_training_steps_lower_the_answer_loss(vlm):
    from tenfold.vision.vlm import batch_for, train_vlm

    held = batch_for(vlm, questions(16, "test", kinds=KINDS, seed=5))
    trainable = copy.deepcopy(vlm)

    def loss(model):
        with torch.no_grad():
            return model(**held).loss.item()

    before = loss(trainable)
    losses = train_vlm(trainable, steps=8, batch_size=8, lr=1e-3, seed=0)
    assert len(losses) == 8 and all(x == x for x in losses)
    assert loss(trainable) < before - 0.5, (before, loss(trainable))
    frozen = {n for n, p in trainable.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("lm.") and "lora_" not in n for n in frozen)  # the LM is frozen, its LoRA is not
    assert any("lora_" in n for n, p in trainable.named_parameters() if p.requires_grad)


@pytest.mark.slow
def test_save_load_and_engine_match_generate(vlm, lm, tmp_path):
    from tenfold.serve.engine import Engine, GenParams, Job
    from tenfold.vision.vlm import VisionLanguageModel

    with torch.no_grad():  # non-zero LoRA weights, so that a lost adapter would change the answers
        for name, param in vlm.lm.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.05, generator=torch.Generator().manual_seed(0))
    vlm.save(tmp_path / "vlm")
    again = VisionLanguageModel.load(tmp_path / "vlm", lm=copy.deepcopy(lm[0]))  # the base LM, LoRA loaded from disk
    assert (tmp_path / "vlm" / "lora.safetensors").exists()
    images = [render(scenes(1, "test", seed=4)[0])]
    assert again.ask(images, "Describe the image.", 12) == vlm.ask(images, "Describe the image.", 12)
    # the server's engine (sink cache, prefill from embeddings) decodes the same tokens as transformers' generate
    ids = vlm.prompt_ids([{"role": "user", "content": "<image>\nDescribe the image."}])
    expected = vlm.generate([ids], [images], max_new_tokens=12)[0]
    engine = Engine(vlm.lm, vlm.tokenizer, SinkConfig(4, 252, prefill_chunk=7), vision=vlm)
    job = engine.run(Job(ids, GenParams(max_tokens=12, temperature=0.0), images=images))
    assert job.choices[0].text.strip() == expected
    with pytest.raises(ValueError, match="image placeholder"):
        engine.run(Job(ids, GenParams(max_tokens=2), images=images * 2))
    with pytest.raises(TenfoldError, match="no vision-language model"):
        VisionLanguageModel.load(tmp_path)


def _tenfold(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "tenfold", "vision", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_cli_train_vlm_then_ask(tmp_path):
    clip = _tenfold("train-clip", "--out", str(tmp_path / "clip"), "--steps", "3", "--batch-size", "8", "--n-test", "10",
                    "--json")
    assert clip.returncode == 0, clip.stderr
    run = _tenfold("train-vlm", "--clip", str(tmp_path / "clip"), "--out", str(tmp_path / "vlm"), "--steps", "2",
                   "--batch-size", "4", "--image-tokens", "4", "--n-test", "5", "--json")
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    assert set(result["accuracy"]) == {"test", "unseen"} and (tmp_path / "vlm" / "eval.json").exists()
    render(scenes(1, "test")[0]).save(tmp_path / "scene.png")
    answer = _tenfold("ask", str(tmp_path / "scene.png"), "How many objects are there?", "--vlm", str(tmp_path / "vlm"),
                      "--max-tokens", "4", "--json")
    assert answer.returncode == 0, answer.stderr
    assert isinstance(json.loads(answer.stdout)["answer"], str)
    again = _tenfold("train-vlm", "--clip", str(tmp_path / "clip"), "--out", str(tmp_path / "vlm"), "--steps", "2")
    assert again.returncode != 0 and "already holds" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["train-vlm", "--clip", "/nonexistent", "--out", "OUT"], "no CLIP model"),
    (["ask", "/nonexistent.png", "What colour?", "--vlm", "X"], "no image at"),
    (["ask", "What colour?", "--vlm", "X"], "at least one image"),
])
def test_cli_errors_are_one_line(args, message, tmp_path):
    run = _tenfold(*[a.replace("OUT", str(tmp_path / "o")) for a in args], timeout=120)
    assert run.returncode != 0 and message in run.stderr
    assert "Traceback" not in run.stderr and len(run.stderr.strip().splitlines()) == 1
