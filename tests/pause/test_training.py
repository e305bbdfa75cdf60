"""The from-scratch pause experiment's parts: tasks, corpus, tokenizer, accelerate loops, resume, evaluation, CLI."""
import json
import subprocess
import sys

import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.pause.corpus import generic_lines, train_tokenizer
from tenfold.pause.evaluate import accuracy, predict
from tenfold.pause.tasks import TASKS, examples, split
from tenfold.pause.tokens import pause_id
from tenfold.pause.training import (TrainConfig, encode_pairs, load_checkpoint, save_checkpoint, small_llama,
                                    token_stream, train)

TEXT = "\n".join(generic_lines(3000, seed=0))


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(TEXT, vocab_size=400)


@pytest.fixture(scope="module")
def stream(tok):
    return token_stream(tok, TEXT)


def fresh(tok):
    import copy

    t = copy.deepcopy(tok)
    return small_llama(len(t), "tiny", seed=0), t


def test_tasks_are_deterministic_correct_and_held_out():
    for task in TASKS:
        assert examples(task, 20, 3) == examples(task, 20, 3) != examples(task, 20, 4)
        train_pairs, test_pairs = split(task, 300, 50)
        assert len(test_pairs) == 50 and not {p for p, _ in train_pairs} & {p for p, _ in test_pairs}
    for prompt, answer in examples("add", 50, 0):
        a, b = prompt.rstrip("=").split("+")
        assert int(a) + int(b) == int(answer)
    for prompt, answer in examples("sort", 50, 0):
        assert answer.split() == sorted(prompt[5:-1].split())
    for prompt, answer in examples("count", 50, 0):
        _, letter, _, s = prompt.rstrip(":").split()
        assert s.count(letter) == int(answer)
    for prompt, answer in examples("reading", 50, 0):
        thing, name = prompt.split("How many ")[1].split(" does ")
        assert f"{name.split()[0]} has {answer} {thing}." in prompt
    with pytest.raises(TenfoldError, match="unknown task"):
        examples("poetry", 3, 0)


def test_tokenizer_splits_digits_and_round_trips(tok):
    assert tok.tokenize("4821") == ["4", "8", "2", "1"]
    text = "Emma has 13 hats. sort 3 1 2: 1 2 3"
    assert tok.decode(tok(text, add_special_tokens=False).input_ids) == text
    assert tok.pad_token_id is not None and tok.eos_token_id is not None
    with pytest.raises(TenfoldError):
        train_tokenizer("  \n ")


@pytest.mark.slow
def test_pretraining_corpus_mixes_austen_with_generic_text():
    from tenfold.pause.corpus import pretraining_text

    text = pretraining_text(generic_fraction=0.3, max_chars=400_000)
    lines = text.split("\n")
    generic = set(generic_lines(50_000, seed=0))
    share = sum(len(ln) for ln in lines if ln in generic) / len(text)
    assert 0.2 < share < 0.4
    assert "Elizabeth" in text or "Emma" in text


def test_pretraining_lowers_the_loss_and_pauses_enter_the_vocabulary(tok, stream):
    model, t = fresh(tok)
    hist = train(model, t, TrainConfig(steps=40, batch_size=16, seq_len=32, pause_rate=0.1, lr=3e-3), stream=stream)
    first, last = sum(hist["losses"][:5]) / 5, sum(hist["losses"][-5:]) / 5
    assert last < first - 1.0
    assert hist["pause_id"] == pause_id(t) == model.get_input_embeddings().weight.shape[0] - 1


def test_finetuning_lowers_the_loss_on_answers(tok):
    model, t = fresh(tok)
    pairs = encode_pairs(t, split("sort", 500, 1)[0])
    hist = train(model, t, TrainConfig(steps=60, batch_size=16, m_ft=2, lr=3e-3), pairs=pairs)
    assert sum(hist["losses"][-5:]) / 5 < sum(hist["losses"][:5]) / 5 - 1.0


def test_an_interrupted_run_resumes_to_the_same_weights(tok, stream, tmp_path):
    cfg = dict(steps=12, batch_size=8, seq_len=24, pause_rate=0.1, checkpoint_every=5)
    model, t = fresh(tok)
    train(model, t, TrainConfig(**cfg), stream=stream, run_dir=tmp_path / "whole")

    class Crash(Exception):
        pass

    def crash_at_7(step, total, loss):
        if step == 7:
            raise Crash

    broken, t2 = fresh(tok)
    with pytest.raises(Crash):
        train(broken, t2, TrainConfig(**cfg), stream=stream, run_dir=tmp_path / "cut", progress=crash_at_7)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["step"] == 5
    with pytest.raises(TenfoldError, match="already holds"):
        train(*fresh(tok), TrainConfig(**cfg), stream=stream, run_dir=tmp_path / "cut")
    resumed, t3 = fresh(tok)
    hist = train(resumed, t3, TrainConfig(**cfg), stream=stream, run_dir=tmp_path / "cut", resume=True)
    assert len(hist["losses"]) == 12
    for a, b in zip(model.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_a_saved_checkpoint_reloads_with_identical_predictions(tok, tmp_path):
    model, t = fresh(tok)
    pairs = split("sort", 300, 12)
    train(model, t, TrainConfig(steps=20, batch_size=16, m_ft=3, lr=3e-3), pairs=encode_pairs(t, pairs[0]))
    save_checkpoint(model, t, tmp_path / "ckpt")
    again, t2 = load_checkpoint(tmp_path / "ckpt")
    prompts = [p for p, _ in pairs[1]]
    assert pause_id(t2) == pause_id(t)
    assert predict(model, t, prompts, 3) == predict(again, t2, prompts, 3)
    with pytest.raises(TenfoldError, match="no saved model"):
        load_checkpoint(tmp_path / "nothing")


def test_batched_left_padded_predictions_equal_one_by_one(tok):
    model, t = fresh(tok)
    train(model, t, TrainConfig(steps=30, batch_size=16, m_ft=2, lr=3e-3), pairs=encode_pairs(t, split("count", 300, 1)[0]))
    prompts = [p for p, _ in examples("reading", 5, 1)] + [p for p, _ in examples("count", 5, 1)]  # mixed lengths
    batched = predict(model, t, prompts, 2, batch_size=10)
    assert batched == [predict(model, t, [p], 2)[0] for p in prompts]
    assert all(pause_id(t) not in t(p, add_special_tokens=False).input_ids for p in batched)
    assert 0 <= accuracy(model, t, examples("count", 10, 2), 2) <= 1


@pytest.mark.parametrize("kwargs, message", [
    (dict(steps=0), "positive"), (dict(pause_rate=1.0), "pause rate"), (dict(m_ft=-2), "m_ft"),
    (dict(lr=float("nan")), "learning rate")])
def test_bad_training_settings_are_clear_errors(tok, stream, kwargs, message):
    with pytest.raises(TenfoldError, match=message):
        train(*fresh(tok), TrainConfig(**kwargs), stream=stream)


def test_training_needs_exactly_one_kind_of_data(tok, stream):
    with pytest.raises(TenfoldError, match="either"):
        train(*fresh(tok), TrainConfig(steps=1))
    with pytest.raises(TenfoldError, match="shorter"):
        train(*fresh(tok), TrainConfig(steps=1, seq_len=64), stream=stream[:30])
    with pytest.raises(TenfoldError, match="no fine-tuning examples"):
        encode_pairs(tok, [])


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "tenfold", "pause", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_cli_pretrain_finetune_eval(tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text(TEXT)
    pt, ft = tmp_path / "pt", tmp_path / "ft"
    r = cli("pretrain", "--text", str(text), "--steps", "6", "--vocab-size", "400", "--checkpoint-every", "3",
            "--out", str(pt))
    assert r.returncode == 0, r.stderr
    assert (pt / "model" / "config.json").exists() and "pretrained" in r.stdout
    r = cli("finetune", "--model", str(pt), "--task", "sort", "--task", "count", "--steps", "4", "--m-ft", "2",
            "--n-train", "50", "--out", str(ft), "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["model"] == str((ft / "model").resolve()) and got["steps"] == 4 and got["m_ft"] == 2
    assert got["tasks"] == ["sort", "count"] and got["examples"] == 100 and got["loss_first"] > 0 < got["loss_last"]
    r = cli("eval", "--model", str(ft), "--task", "sort", "--n", "8", "--m-inf", "0", "--m-inf", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["m_ft"] == 2 and set(out["accuracy"]["sort"]) == {"0", "2"}
    # the same run directory again: refused without --resume; a finished run cannot be resumed
    r = cli("finetune", "--model", str(pt), "--task", "sort", "--steps", "4", "--out", str(ft))
    assert r.returncode == 1 and "already holds" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = cli("finetune", "--model", str(pt), "--task", "sort", "--out", str(ft), "--resume")
    assert r.returncode == 1 and "already finished" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["eval", "--model", "/nonexistent/model", "--task", "sort"], "error"),
    (["pretrain", "--text", "/nonexistent.txt", "--out", "OUT"], "nonexistent"),
    (["pretrain", "--pause-rate", "1.5", "--steps", "2", "--out", "OUT"], "pause rate"),
    (["finetune", "--model", "x", "--task", "poetry", "--out", "OUT"], "invalid choice"),
])
def test_cli_bad_input_is_one_line(tmp_path, args, message):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    r = cli(*args)
    assert r.returncode != 0 and message in r.stderr.lower() and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr


def test_a_finished_run_cannot_be_resumed(tok, stream, tmp_path):
    cfg = TrainConfig(steps=3, batch_size=4, seq_len=16, checkpoint_every=2)
    train(*fresh(tok), cfg, stream=stream, run_dir=tmp_path)
    with pytest.raises(TenfoldError, match="no checkpoint to resume"):
        train(*fresh(tok), cfg, stream=stream, run_dir=tmp_path, resume=True)
