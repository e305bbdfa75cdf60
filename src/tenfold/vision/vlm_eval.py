"""Scoring the small VLM: held-out questions per kind, on seen and unseen (colour, shape) combinations.

Test questions come from the ``test`` split (only pairs seen in training) and the ``unseen`` split (every scene
holds a held-out pair; colour / shape / position questions there may still ask about a seen object). The floor
for each kind is the majority answer of the training questions, so an accuracy is only meaningful above it.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from tenfold.vision.questions import KINDS, Question, is_correct, questions
from tenfold.vision.world import render


def evaluate_vlm(vlm, qs: list[Question], batch_size: int = 16, progress=None) -> list[tuple[str, float]]:
    """(generated answer, score) per question: exact one-word answers, caption object recall (0..1)."""
    order = sorted(range(len(qs)), key=lambda i: qs[i].kind == "caption")  # short answers batch together
    out: dict[int, tuple[str, float]] = {}
    for start in range(0, len(order), batch_size):
        chunk = [qs[i] for i in order[start:start + batch_size]]
        prompts = [vlm.prompt_ids([{"role": "user", "content": q.prompt()}]) for q in chunk]
        longest = max(48 if q.kind == "caption" else 6 for q in chunk)
        texts = vlm.generate(prompts, [[render(q.scene, vlm.image_size)] for q in chunk], max_new_tokens=longest)
        for i, q, t in zip(order[start:start + batch_size], chunk, texts):
            out[i] = (t, is_correct(q, t))
        if progress:
            progress(len(out), len(qs))
    return [out[i] for i in range(len(qs))]


def by_kind(qs: list[Question], scores: list[float]) -> dict[str, float]:
    groups = defaultdict(list)
    for q, s in zip(qs, scores):
        groups[q.kind].append(s)
    return {k: round(sum(v) / len(v), 4) for k, v in sorted(groups.items(), key=lambda kv: KINDS.index(kv[0]))}


def majority_baseline(test: list[Question], n_train: int = 2000) -> dict[str, float]:
    """Accuracy of always giving the most common training answer of each kind (captions: not applicable)."""
    train = questions(n_train, "train", kinds=("colour", "shape", "count", "position"), seed=99)
    best = {k: Counter(q.answer for q in train if q.kind == k).most_common(1)[0][0]
            for k in ("colour", "shape", "count", "position")}
    return by_kind([q for q in test if q.kind in best], [float(q.answer == best[q.kind]) for q in test if q.kind in best])


def summarise(vlm, split: str, n: int, seed: int = 0, progress=None) -> dict[str, float]:
    """Accuracy per kind on ``n`` held-out questions of ``split`` (kinds in turn)."""
    qs = questions(n, split, kinds=KINDS, seed=seed)
    scores = [s for _, s in evaluate_vlm(vlm, qs, progress=progress)]
    return by_kind(qs, scores)
