"""Pause tokens: insertion, loss masks, never emitting a pause, answers after the pauses, checkpoints."""
import numpy as np
import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.pause import (IGNORE, PauseFinetuneCollator, PausePretrainCollator, SuppressPause, add_pause_token,
                           generate_after_pauses, insert_pauses, pause_id)

PAUSE, PAD, END = 30, 0, 31


def tiny_llama(vocab=32, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_insertion_rate_is_exact_before_trimming():
    ids = list(range(1, 101))
    rng = np.random.default_rng(0)
    for _ in range(20):
        out = insert_pauses(ids, PAUSE + 1000, 0.1, rng)
        assert len(out) == 100
        kept = [t for t in out if t != PAUSE + 1000]
        assert kept == ids[: len(kept)]  # order kept, the tail trimmed
        assert len(out) - len(kept) == 100 - len(kept) <= 10
    # before trimming: exactly round(0.1 * n) pauses, uniformly placed (mean position near the middle)
    positions = []
    for seed in range(300):
        long = insert_pauses(ids + [0] * 10, -1, 10 / 110, np.random.default_rng(seed))
        positions += [i for i, t in enumerate(long) if t == -1]
        assert long.count(-1) <= 10
    assert abs(np.mean(positions) - 54.5) < 3
    assert insert_pauses(ids, PAUSE, 0.0) == ids
    with pytest.raises(TenfoldError):
        insert_pauses(ids, PAUSE, 1.5)


def test_pretraining_labels_ignore_pauses_and_padding():
    batch = PausePretrainCollator(PAUSE, PAD, rate=0.2, seed=1)([list(range(1, 21)), list(range(1, 11))])
    ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    assert ids.shape == labels.shape == (2, 20) and int(mask[1].sum()) == 10
    assert ((ids == PAUSE).sum(1) > 0).all()
    assert torch.equal(labels == IGNORE, (ids == PAUSE) | (mask == 0))
    assert torch.equal(labels[labels != IGNORE], ids[labels != IGNORE])


def test_finetuning_labels_cover_only_the_answer():
    batch = PauseFinetuneCollator(PAUSE, PAD, m_ft=4, end=END)([([5, 6, 7], [8, 9]), ([5], [3])])
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids[0].tolist() == [5, 6, 7, PAUSE, PAUSE, PAUSE, PAUSE, 8, 9, END]
    assert labels[0].tolist() == [IGNORE] * 7 + [8, 9, END]
    assert ids[1].tolist()[:7] == [5, PAUSE, PAUSE, PAUSE, PAUSE, 3, END] and labels[1].tolist()[5:7] == [3, END]
    assert (labels[1, 7:] == IGNORE).all() and (batch["attention_mask"][1, 7:] == 0).all()
    with pytest.raises(TenfoldError):
        PauseFinetuneCollator(PAUSE, PAD, m_ft=-1)


def test_the_pause_logit_is_never_sampled():
    model = tiny_llama()
    with torch.no_grad():
        model.lm_head.weight[PAUSE] *= 0
        model.model.norm.weight.fill_(1.0)
    scores = torch.zeros(1, 32)
    scores[0, PAUSE] = 100.0
    assert SuppressPause(PAUSE)(torch.zeros(1, 1, dtype=torch.long), scores)[0].argmax() != PAUSE
    # a model that prefers the pause token above all: sampled generation still never emits it
    with torch.no_grad():
        model.lm_head.weight[PAUSE] = model.lm_head.weight.sum(0) * 5
    for seed in range(3):
        torch.manual_seed(seed)
        out = generate_after_pauses(model, [1, 2, 3], PAUSE, 2, max_new_tokens=20, do_sample=True, temperature=2.0)
        assert PAUSE not in out and len(out) == 20


def _train_after_pauses(m_ft: int, steps: int = 250):
    """A tiny model learns to repeat the digit of 'x y' it is asked for, with m_ft pauses before answering."""
    torch.manual_seed(0)
    model = tiny_llama().train()
    collate = PauseFinetuneCollator(PAUSE, PAD, m_ft=m_ft, end=END)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    with torch.enable_grad():  # other test modules switch gradients off globally
        for _ in range(steps):
            xs = rng.integers(0, 10, (32, 2))
            batch = collate([([1 + x, 11 + y, 21], [1 + x]) for x, y in xs])
            loss = model(**batch).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), float(loss.detach())


def test_a_pause_finetuned_model_answers_after_its_pauses():
    model, loss = _train_after_pauses(m_ft=3)
    assert loss < 0.5
    right = sum(generate_after_pauses(model, [1 + x, 11 + y, 21], PAUSE, 3, max_new_tokens=2, eos=END)
                == [1 + x] for x in range(10) for y in range(10))
    assert right >= 90


def test_a_checkpoint_round_trips(tmp_path, lm_copy):
    model, tok = lm_copy
    pid = add_pause_token(model, tok)
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    from tenfold.models import load_lm

    again, tok2 = load_lm(str(tmp_path))
    assert pause_id(tok2) == pid
    ids = torch.tensor([tok("Hello there", add_special_tokens=False).input_ids + [pid, pid]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, again(ids).logits, atol=1e-5)


@pytest.fixture(scope="module")
def lm_copy():
    from tenfold.models import load_lm

    return load_lm(quantize=None)  # a private copy: adding a token must not touch the session's shared model


@pytest.mark.slow
def test_adding_the_pause_token_to_the_bundled_model(lm_copy):
    model, tok = lm_copy
    before = model.get_input_embeddings().weight.shape[0]
    pid = add_pause_token(model, tok)
    assert add_pause_token(model, tok) == pid == pause_id(tok)  # idempotent
    weight = model.get_input_embeddings().weight
    assert weight.shape[0] >= max(before, pid + 1)
    assert torch.allclose(weight[pid], weight[:before].mean(0), atol=1e-5)
    assert tok.decode([pid]) == "<pause>" and tok("a <pause> b", add_special_tokens=False).input_ids.count(pid) == 1


def test_missing_pause_token_is_a_clear_error(lm_copy):
    from transformers import AutoTokenizer

    fresh = AutoTokenizer.from_pretrained(lm_copy[1].name_or_path)  # the bundled tokenizer, as shipped
    assert "<pause>" not in fresh.get_vocab()
    with pytest.raises(TenfoldError, match="add_pause_token"):
        pause_id(fresh)


def test_a_vocab_smaller_than_the_byte_alphabet_is_refused_not_silently_raised(tmp_path, capsys):
    """``pause pretrain --vocab-size 1`` used to train a 258-token vocabulary (the 256 bytes and two specials) and
    record 1 in args.json; it is one line now, before anything is written."""
    from tenfold.cli import main

    assert main(["pause", "pretrain", "--out", str(tmp_path / "run"), "--steps", "1", "--vocab-size", "1"]) == 1
    err = capsys.readouterr().err
    assert "--vocab-size must be at least 258" in err and "got 1)" in err
    assert not (tmp_path / "run").exists()
