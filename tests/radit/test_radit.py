"""RA-DIT parts: the QA data, REPLUG ensembling, answer-only LM-ft, LM-supervised retrieval, checkpoints."""
import json

import numpy as np
import pytest
import torch

from tenfold.errors import TenfoldError
from tenfold.models.finetune import IGNORE, answer_only_batch, load_checkpoint
from tenfold.radit.data import build, entity_split, is_correct
from tenfold.radit.lm_ft import finetune_lm, lm_ft_examples
from tenfold.radit.reader import answer_ids, answer_logprob, ensemble_weights, prompt_ids, replug_generate
from tenfold.radit.retriever import DualEncoder, lsr_distribution, recall_at_k, retriever_kl, train_query_encoder


@pytest.fixture(scope="module")
def data():
    return build(n_cities=150, n_films=150)


@pytest.fixture(scope="module")
def tok(lm):
    return lm[1]


def tiny_lm(tok, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


def test_questions_are_answered_by_their_passage_and_split_by_entity(data):
    assert len(data.passages) > 500 and {"capital", "currency", "city-country", "film-director", "film-year"} <= {
        q.kind for q in data.questions}
    for q in data.questions:
        assert q.answer in data.passages[q.passage]
        assert q.split == entity_split(q.entity)
    train = {q.entity for q in data.split("train")}
    test = {q.entity for q in data.split("test")}
    assert test and train and not train & test
    with pytest.raises(TenfoldError):
        data.split("validation")


def test_answer_matching_normalises_but_is_not_lenient():
    assert is_correct("The capital of Eritrea is Asmara.", "Asmara")
    assert is_correct("james l. brooks", "James L. Brooks")
    assert not is_correct("Asmaraville", "Asmara") and not is_correct("", "Asmara")
    assert not is_correct("I think so.\nAsmara", "Asmara")  # only the first line counts


def test_ensemble_weights_sum_to_one():
    w = ensemble_weights([[0.9, 0.5, 0.1], [0.2, 0.2, 0.2]], temperature=0.1)
    assert np.allclose(w.sum(-1), 1) and w[0, 0] > w[0, 1] > w[0, 2] and np.allclose(w[1], 1 / 3)
    with pytest.raises(TenfoldError):
        ensemble_weights([0.3, float("nan")])


def test_lsr_target_is_a_distribution_and_kl_vanishes_when_retriever_and_lm_agree():
    p = lsr_distribution([[-2.0, -9.0, -4.0], [-1.0, -1.0, -30.0]], tau=1.0)
    assert np.allclose(p.sum(-1), 1) and (p >= 0).all() and p[0].argmax() == 0
    target = torch.tensor(p, dtype=torch.float32)
    agree = 0.05 * torch.log(target)  # scores whose softmax(score / 0.05) is the target
    assert float(retriever_kl(agree, target, 0.05)) == pytest.approx(0.0, abs=1e-5)
    assert float(retriever_kl(torch.zeros(2, 3), target, 0.05)) > 0.1
    with pytest.raises(TenfoldError):
        lsr_distribution([[0.0, float("inf")]])


def test_lm_ft_loss_covers_only_the_answer_tokens(data, tok):
    qs = data.split("train")[:2]
    hits = [[(q.passage, 0.9), (0, 0.3)] for q in qs]
    ex = lm_ft_examples(tok, qs, hits, data.passages, k=2)
    assert len(ex) == 4  # one example per retrieved chunk
    batch = answer_only_batch(ex, tok.pad_token_id)
    for row, (prompt, target) in enumerate(ex):
        labels = batch["labels"][row]
        kept = labels[labels != IGNORE].tolist()
        assert kept == target == answer_ids(tok, qs[row // 2].answer)
        assert (labels[: len(prompt)] == IGNORE).all()
        assert batch["input_ids"][row, len(prompt):len(prompt) + len(target)].tolist() == target


def test_replug_with_one_prompt_is_greedy_decoding_and_weights_select_prompts(tok):
    model = tiny_lm(tok)
    a, b = prompt_ids(tok, "What is the capital of France?"), prompt_ids(tok, "Who directed Alien?", ["Alien is a film."])
    out = model.generate(torch.tensor([a]), max_new_tokens=5, do_sample=False, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.eos_token_id)[0, len(a):].tolist()
    expected = tok.decode([t for t in out if t != tok.eos_token_id], skip_special_tokens=True).strip()
    assert replug_generate(model, tok, [[a]], [[1.0]], max_new_tokens=5) == [expected]
    both = replug_generate(model, tok, [[a, b], [a, b], [b]], [[1.0, 0.0], [0.5, 0.5], [1.0]], max_new_tokens=5)
    alone = replug_generate(model, tok, [[a], [b]], [[1.0], [1.0]], max_new_tokens=5)
    assert both[0] == alone[0] and both[2] == alone[1]  # left padding in a mixed batch changes nothing
    with pytest.raises(TenfoldError, match="sum to one"):
        replug_generate(model, tok, [[a, b]], [[0.7, 0.7]])


def test_answer_logprob_is_the_sum_of_answer_token_log_probs(tok):
    model = tiny_lm(tok)
    p, a = prompt_ids(tok, "What is the capital of Peru?"), answer_ids(tok, "Lima")
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([p + a])).logits[0], -1)
    manual = sum(float(logp[len(p) - 1 + i, t]) for i, t in enumerate(a))
    batched = answer_logprob(model, tok, [p, prompt_ids(tok, "Hi?")], [a, answer_ids(tok, "Lima, Peru")])
    assert batched[0] == pytest.approx(manual, abs=1e-4)


@pytest.mark.slow
def test_lm_ft_lowers_the_loss_and_the_checkpoint_reloads_identically(data, lm, tmp_path):
    import copy

    model, tok = copy.deepcopy(lm[0]), lm[1]  # the session's model stays untouched
    qs = data.split("train")[:6]
    ex = lm_ft_examples(tok, qs, [[(q.passage, 1.0)] for q in qs], data.passages, k=1)
    trained, losses = finetune_lm(model, tok, ex, steps=10, batch_size=4, lr=2e-3, lora_r=8, run_dir=tmp_path / "run")
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.3
    assert not any("lora" in n for n, _ in trained.named_parameters())  # adapters merged
    again, tok2 = load_checkpoint(tmp_path / "run")
    prompts = [[prompt_ids(tok, q.question, [data.passages[q.passage]])] for q in qs[:3]]
    assert replug_generate(trained, tok, prompts, [[1.0]] * 3, 6) == replug_generate(again, tok2, prompts, [[1.0]] * 3, 6)
    with pytest.raises(TenfoldError, match="lora_r"):
        finetune_lm(tiny_lm(tok), tok, ex, lora_r=-1)


@pytest.mark.slow
def test_retriever_finds_gold_passages_and_r_ft_fits_lsr_targets(data):
    passages = data.passages[:300]
    qs = [q for q in data.questions if q.passage < 300][:60]
    r = DualEncoder(passages)
    hits = r.search([q.question for q in qs], 4)
    assert recall_at_k(hits, [q.passage for q in qs], 4) > 0.8
    candidates = np.array([[i for i, _ in h] for h in hits])
    # a target that puts most mass on the gold chunk where it is among the candidates
    targets = np.array([[0.85 if i == q.passage else 0.05 for i in row] for row, q in zip(candidates, qs)])
    targets = targets / targets.sum(-1, keepdims=True)
    before = r.encode_queries([qs[0].question])
    losses = train_query_encoder(r, [q.question for q in qs], candidates, targets, steps=12, batch_size=16, lr=5e-5)
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    assert not np.allclose(before, r.encode_queries([qs[0].question]))  # the query encoder moved
    assert np.allclose(r.vectors, r.embedder.encode(passages[:5]).tolist() + r.vectors[5:].tolist(), atol=1e-5)
    with pytest.raises(TenfoldError):
        r.search(["  "], 3)


def test_zero_films_or_cities_means_none(tmp_path, capsys):
    """``radit data --films 0`` used to render one film (the limit was checked after adding a film)."""
    from tenfold.cli import main

    assert main(["radit", "data", "--out", str(tmp_path / "d"), "--cities", "0", "--films", "0", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    kinds = {kind for split in got["by_split"].values() for kind in split}
    assert not kinds & {"film_director", "film_year", "city_country"}, got["by_split"]
