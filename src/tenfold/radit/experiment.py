"""``radit``: each RA-DIT stage on held-out entities (Lin et al. 2023, Table 2-4, in miniature).

Base closed-book; base LM + retrieval (REPLUG ensemble over the top-k, and plain concatenation);
+ LM-ft (LoRA on one example per retrieved chunk of training questions); + R-ft (the query encoder fitted to
LM-supervised retrieval targets, precomputed once with the base LM); + both (RA-DIT). Test questions are about
entities that never occur in fine-tuning data; their passages are in the corpus.
"""
from __future__ import annotations

import copy
from functools import partial

import numpy as np

from tenfold.report import experiment

STAGES = ["closed-book", "base + retrieval (concat)", "base + retrieval (REPLUG)", "+ LM-ft", "+ R-ft",
          "+ both (RA-DIT)"]


@experiment(
    "radit", paper="ra-dit",
    claim="Fine-tuning the LM to use retrieved text (LM-ft) and the retriever to return what the LM finds useful "
          "(R-ft) each improve a retrieval-augmented LM on knowledge-intensive tasks, and both together improve most.",
    paper_numbers={"model": "LLaMA 65B + DRAGON+ retriever, fine-tuned on instruction and QA datasets",
                   "0-shot MMLU": "LLaMA-65B 51.2 -> REPLUG 59.7 -> RA-DIT 64.6",
                   "RA-DIT vs REPLUG, average over knowledge-intensive tasks": "+8.9 (0-shot), +1.4 (5-shot)",
                   "stages": "LM-ft and R-ft each help; both together help most"})
def radit(run):
    import torch

    from tenfold.models.lm import load_lm
    from tenfold.radit.lm_ft import finetune_lm, lm_ft_examples
    from tenfold.radit.retriever import train_query_encoder

    seeds = run.pick([0], [0], [0, 1, 2], shrunk="seeds")
    n_cities, n_films = run.pick((150, 150), (600, 600), (3000, 3000))
    per_kind_test, per_kind_train = run.pick((2, 2), (6, 8), (40, 80))
    k, k_lsr = run.pick((2, 2), (2, 3), (3, 5))
    lm_steps, r_steps = run.pick((2, 4), (16, 24), (300, 200), shrunk="LM-ft x R-ft steps")
    tau_lsr, tau_r, temp = 1.0, 0.05, 0.1
    run.settings.update(seeds=seeds, corpus=f"countries + {n_cities} cities + {n_films} films, one passage each",
                        test=f"{per_kind_test} held-out questions per kind (6 kinds), answer in the first line",
                        train=f"{per_kind_train} training questions per kind", k=k, k_lsr=k_lsr,
                        lm_ft=f"LoRA r=8 on q/k/v/o, {lm_steps} steps x 8 examples, lr 3e-4, one example per chunk",
                        r_ft=f"query encoder (MiniLM) {r_steps} steps x 16, lr 2e-5, tau_LSR {tau_lsr}, tau_R {tau_r}",
                        replug_temperature=temp, eval_dtype="bfloat16", train_dtype="float32")

    run.progress("data and index")
    data, test, train, retriever = _data_and_index(run, n_cities, n_films, per_kind_test, per_kind_train)
    initial_query = copy.deepcopy(retriever.query_model)
    model, tok = load_lm(None, quantize=None)
    base_eval = copy.deepcopy(model).to(torch.bfloat16)
    accuracy = partial(_accuracy, tok, test, data.passages, k, temp)
    questions = [q.question for q in test]
    base_hits = retriever.search(questions, max(k, 10))
    stages, recall = _Stages(), {"base": _recall(base_hits, test, k)}
    run.progress("closed-book and base + retrieval")
    preds = stages.evaluate(accuracy, (("closed-book", base_eval, None, False),
                                       ("base + retrieval (concat)", base_eval, base_hits, True),
                                       ("base + retrieval (REPLUG)", base_eval, base_hits, False)))
    examples = {"question": [q.question for q in test[:6]], "answer": [q.answer for q in test[:6]],
                "base + retrieval": preds[:6]}

    run.progress(f"LSR targets ({len(train)} questions x {k_lsr} chunks)")
    train_hits = retriever.search([q.question for q in train], max(k, k_lsr))
    candidates, targets, lsr_gold = _lsr_targets(base_eval, tok, train, train_hits, data.passages, k_lsr, tau_lsr)
    lm_examples = lm_ft_examples(tok, train, train_hits, data.passages, k)
    loss_curves = {}
    for seed in seeds:
        run.progress(f"seed {seed}: LM-ft ({lm_steps} steps)")
        ft, losses = finetune_lm(copy.deepcopy(model), tok, lm_examples, steps=lm_steps, batch_size=8, lr=3e-4,
                                 seed=seed)
        loss_curves[f"LM-ft s{seed}"] = losses
        ft_eval = ft.to(torch.bfloat16)
        run.progress(f"seed {seed}: R-ft ({r_steps} steps)")
        retriever.query_model = copy.deepcopy(initial_query)
        loss_curves[f"R-ft s{seed}"] = train_query_encoder(retriever, [q.question for q in train], candidates, targets,
                                                           steps=r_steps, batch_size=16, lr=2e-5, tau_r=tau_r, seed=seed)
        r_hits = retriever.search(questions, max(k, 10))
        recall[f"R-ft s{seed}"] = _recall(r_hits, test, k)
        run.progress(f"seed {seed}: evaluating the fine-tuned stages")
        preds = stages.evaluate(accuracy, (("+ LM-ft", ft_eval, base_hits, False),
                                           ("+ R-ft", base_eval, r_hits, False),
                                           ("+ both (RA-DIT)", ft_eval, r_hits, False)))
        examples[f"RA-DIT s{seed}"] = preds[:6]
        del ft, ft_eval
    retriever.query_model = initial_query

    table = {s: _stat(v) for s, v in stages.accuracy.items()}
    ours = {"accuracy": table, "accuracy_by_kind (first seed)": stages.by_kind, "retriever_recall": recall,
            "lsr_mass_on_gold_passage": round(lsr_gold, 4), "n_test": len(test), "n_train_questions": len(train),
            "corpus_passages": len(data.passages), "examples": examples}
    _plots(run, table, loss_curves)
    checks = radit_checks(stages.correct)
    return {"ours": ours, "checks": checks, "why": _why(table, checks, len(seeds), len(test))}


def _data_and_index(run, n_cities: int, n_films: int, per_kind_test: int, per_kind_train: int):
    """The QA corpus, its held-out test and training questions (stratified by kind), and the retriever over its
    passages (their token counts go into the run's settings)."""
    from tenfold import home
    from tenfold.radit.data import build, stratified
    from tenfold.radit.retriever import DualEncoder

    data = build(n_cities, n_films)
    test, train = stratified(data.split("test"), per_kind_test, 0), stratified(data.split("train"), per_kind_train, 1)
    retriever = DualEncoder(data.passages, cache_dir=f"{home()}/radit")
    passage_tokens = [retriever.embedder.count_tokens(p) for p in data.passages]
    beyond = sum(max(0, n - retriever.embedder.max_tokens) for n in passage_tokens)
    run.settings.update(passages=f"{len(data.passages)} passages, one chunk each, {max(passage_tokens)} tokens at "
                                 f"most (the embedder reads {retriever.embedder.max_tokens})",
                        embedder_reads=retriever.embedder.fingerprint(),
                        share_of_text_embedded=f"{100 * (1.0 - beyond / max(1, sum(passage_tokens))):.1f}%")
    return data, test, train, retriever


def _accuracy(tok, test, passages, k: int, temp: float, lm, hits, concat: bool = False):
    """``lm`` on the test questions: closed-book (``hits`` None), the top-``k`` passages concatenated, or a REPLUG
    ensemble over them (weights at temperature ``temp``); (correct per question, accuracy by kind, predictions)."""
    from tenfold.radit.data import is_correct
    from tenfold.radit.reader import ensemble_weights, prompt_ids, replug_generate

    if hits is None:
        groups, weights = [[prompt_ids(tok, q.question)] for q in test], [[1.0]] * len(test)
    elif concat:
        groups = [[prompt_ids(tok, q.question, [passages[i] for i, _ in h[:k]])] for q, h in zip(test, hits)]
        weights = [[1.0]] * len(test)
    else:
        groups = [[prompt_ids(tok, q.question, [passages[i]]) for i, _ in h[:k]] for q, h in zip(test, hits)]
        weights = [ensemble_weights([s for _, s in h[:k]], temp) for h in hits]
    preds = replug_generate(lm, tok, groups, weights, max_new_tokens=16)
    right = [bool(is_correct(p, q.answer)) for p, q in zip(preds, test)]
    return right, {kind: float(np.mean([r for r, q in zip(right, test) if q.kind == kind]))
                   for kind in sorted({q.kind for q in test})}, preds


class _Stages:
    """Each stage's results: the accuracy of every run (one per seed when trained), the per-question correctness of
    all runs pooled, and the accuracy by kind of the first run."""

    def __init__(self):
        self.accuracy = {s: [] for s in STAGES}
        self.correct = {s: [] for s in STAGES}
        self.by_kind = {}

    def evaluate(self, accuracy, runs) -> list:
        """Evaluate each ``(stage, lm, hits, concat)`` of ``runs`` with ``accuracy``; the last one's predictions."""
        for stage, lm, hits, concat in runs:
            right, kinds, preds = accuracy(lm, hits, concat)
            self.accuracy[stage].append(float(np.mean(right)))
            self.correct[stage] += right
            self.by_kind.setdefault(stage, kinds)
        return preds


def _recall(hits, test, k: int) -> dict:
    from tenfold.radit.retriever import recall_at_k

    return {f"@{j}": recall_at_k(hits, [q.passage for q in test], j) for j in (1, k)}


def _lsr_targets(lm, tok, train, train_hits, passages, k_lsr: int, tau_lsr: float):
    """LM-supervised retrieval targets over each training question's top-``k_lsr`` passages: (candidate passage ids
    (questions, k_lsr), p_LSR rows (questions, k_lsr), the mean p_LSR mass on the gold passage where it is a
    candidate)."""
    from tenfold.radit.reader import answer_ids, answer_logprob, prompt_ids
    from tenfold.radit.retriever import lsr_distribution

    candidates = np.array([[i for i, _ in h[:k_lsr]] for h in train_hits])
    loglik = answer_logprob(lm, tok, [prompt_ids(tok, q.question, [passages[i]])
                                      for q, row in zip(train, candidates) for i in row],
                            [answer_ids(tok, q.answer) for q in train for _ in range(k_lsr)]).reshape(len(train), k_lsr)
    targets = lsr_distribution(loglik, tau_lsr)
    lsr_gold = float(np.mean([t[list(row).index(q.passage)] for t, row, q in zip(targets, candidates, train)
                              if q.passage in row]))
    return candidates, targets, lsr_gold


def _stat(values) -> dict:
    a = np.asarray(values, dtype=float)
    return {"mean": round(float(a.mean()), 4), "std": round(float(a.std()), 4), "runs": [round(float(x), 4) for x in a]}


BASE = "base + retrieval (REPLUG)"
# RA-DIT over REPLUG, averaged over the knowledge-intensive tasks, 0-shot: +8.9 points (Lin et al. 2023, Table 2).
RADIT_GAIN = 0.089


def radit_checks(correct: dict) -> list:
    """RA-DIT's claim as accuracy differences on the held-out questions (Newcombe intervals; a fine-tuned stage pools
    its per-question correctness over the seeds, the base stages are evaluated once):

    - LM-ft improves the retrieval-augmented LM: + LM-ft minus base + retrieval (REPLUG), > 0;
    - R-ft improves it: + R-ft minus the same, > 0;
    - both together improve it, by the paper's gain: RA-DIT minus REPLUG, > 0, meant to be at least
      :data:`RADIT_GAIN`;
    - and most: RA-DIT minus the better of LM-ft and R-ft (by accuracy), > 0.

    A comparison where neither side answers any question right is at chance (free-form answers: chance is 0).
    """
    from tenfold.report.verdict import Check, accuracy_difference

    def check(name, a, b, smallest=None):
        return Check(name, accuracy_difference(correct[a], correct[b], unit="answers"), threshold=0.0,
                     smallest=smallest, at_chance=not any(correct[a]) and not any(correct[b]))

    better = max(("+ LM-ft", "+ R-ft"), key=lambda s: (float(np.mean(correct[s])), s == "+ LM-ft"))
    return [check("+ LM-ft minus base + retrieval (REPLUG)", "+ LM-ft", BASE),
            check("+ R-ft minus base + retrieval (REPLUG)", "+ R-ft", BASE),
            check("+ both (RA-DIT) minus base + retrieval (REPLUG)", "+ both (RA-DIT)", BASE, smallest=RADIT_GAIN),
            check(f"+ both (RA-DIT) minus the better single stage ({better})", "+ both (RA-DIT)", better)]


def _why(table: dict, checks: list, n_seeds: int, n_test: int) -> str:
    return (f"accuracy on {n_test} held-out questions (fine-tuned stages: mean over {n_seeds} seed"
            f"{'s' if n_seeds > 1 else ''}): " + ", ".join(f"{s} {v['mean']:.3f}" for s, v in table.items())
            + "; differences (95% Newcombe): " + ", ".join(
                f"{label} {c.effect.value:+.3f} [{c.effect.low:+.3f}, {c.effect.high:+.3f}]" for label, c in
                zip(("LM-ft vs REPLUG", "R-ft vs REPLUG", "RA-DIT vs REPLUG", "RA-DIT vs the better single stage"),
                    checks)))


def _plots(run, table: dict, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.4))
    names = list(table)
    ax.barh(names[::-1], [table[n]["mean"] for n in names[::-1]], xerr=[table[n]["std"] for n in names[::-1]],
            color=["#999"] * 1 + ["#4c72b0"] * 3 + ["#dd8452"] * 2, capsize=3)
    ax.set_xlabel("held-out accuracy (answer in the first line)")
    ax.set_title("RA-DIT stages on entities never seen in fine-tuning")
    run.save_plot(fig, "stages")
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for name, losses in curves.items():
        axes[0 if name.startswith("LM") else 1].plot(losses, label=name, lw=1)
    axes[0].set_title("LM-ft loss (answer tokens)")
    axes[1].set_title("R-ft loss KL(p_R || p_LSR)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    run.save_plot(fig, "training")
