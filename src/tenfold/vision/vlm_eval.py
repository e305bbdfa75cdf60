"""Scoring the small VLM: held-out questions per kind, on seen and unseen (colour, shape) combinations.

Test questions come from the ``test`` split (only pairs seen in training) and the ``unseen`` split (every scene
holds a held-out pair; colour / shape / position questions there may still ask about a seen object). The floor
for each kind is a text-only one (the most common training answer given what the question text reveals: for
position questions, which two options it names), so an accuracy is only meaningful above it.
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


def _text_key(q: Question) -> str:
    """What the question text alone reveals about its answer: position questions name their two options."""
    if q.kind == "position":
        return "position:" + ("horizontal" if "left or right" in q.text else "vertical")
    return q.kind


def majority_baseline(test: list[Question], n_train: int = 2000) -> dict[str, float]:
    """A text-only floor: the most common training answer given what the question text reveals (its kind; for
    position questions, also which two options it names, so the floor there is ~0.5). Captions: not applicable."""
    train = questions(n_train, "train", kinds=("colour", "shape", "count", "position"), seed=99)
    counts: dict[str, Counter] = defaultdict(Counter)
    for q in train:
        counts[_text_key(q)][q.answer] += 1
    best = {key: c.most_common(1)[0][0] for key, c in counts.items()}
    scored = [q for q in test if _text_key(q) in best]
    return by_kind(scored, [float(q.answer == best[_text_key(q)]) for q in scored])


def summarise(vlm, split: str, n: int, seed: int = 0, progress=None) -> dict[str, float]:
    """Accuracy per kind on ``n`` held-out questions of ``split`` (kinds in turn)."""
    qs = questions(n, split, kinds=KINDS, seed=seed)
    scores = [s for _, s in evaluate_vlm(vlm, qs, progress=progress)]
    return by_kind(qs, scores)
