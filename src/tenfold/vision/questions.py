"""Questions about scenes of the visual world, with exact answers (the VLM's instruction data and its test set).

Five kinds, as in the multimodal foundation issue: ``colour`` ("What colour is the star?", asked only when that
shape is unique in the scene), ``shape`` ("What shape is the red object?", colour unique), ``count`` ("How many
objects are there?"), ``position`` ("Is the red star left or right of the blue circle?", both objects named by a
unique colour + shape, along an axis on which their grid cells differ) and ``caption`` ("Describe the image.",
answered by the scene's listing caption). Answers are one word except captions. Which scenes a question comes
from (train / test / unseen split) decides whether its objects' (colour, shape) pairs were seen in training.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tenfold.errors import TenfoldError
from tenfold.vision.world import COUNT_WORDS, Scene, scenes

KINDS = ("colour", "shape", "count", "position", "caption")
QA_KINDS = KINDS[:-1]
INSTRUCTION = "Answer with one word."


@dataclass(frozen=True)
class Question:
    kind: str
    text: str  # the user's question, without the image placeholder
    answer: str
    scene: Scene

    def prompt(self) -> str:
        """The user message: the image placeholder, then the question (and the answer-format instruction)."""
        suffix = "" if self.kind == "caption" else f" {INSTRUCTION}"
        return f"<image>\n{self.text}{suffix}"


def _unique(values: list[str]) -> set[str]:
    return {v for v in values if values.count(v) == 1}


def ask(scene: Scene, kind: str, rng: random.Random) -> Question | None:
    """One question of ``kind`` about ``scene``, or None when the scene cannot support it unambiguously."""
    objs = scene.objects
    if kind == "count":
        return Question(kind, "How many objects are there?", str(len(objs)), scene)
    if kind == "caption":
        return Question(kind, "Describe the image.", scene.captions()[0], scene)
    if kind == "colour":
        shapes = sorted(_unique([o.shape for o in objs]))
        if not shapes:
            return None
        shape = rng.choice(shapes)
        return Question(kind, f"What colour is the {shape}?", next(o.colour for o in objs if o.shape == shape), scene)
    if kind == "shape":
        colours = sorted(_unique([o.colour for o in objs]))
        if not colours:
            return None
        colour = rng.choice(colours)
        return Question(kind, f"What shape is the {colour} object?", next(o.shape for o in objs if o.colour == colour),
                        scene)
    if kind == "position":
        names = [f"{o.colour} {o.shape}" for o in objs]
        ok = [i for i, n in enumerate(names) if names.count(n) == 1]
        pairs = [(i, j) for i in ok for j in ok if i != j]
        if not pairs:
            return None
        i, j = rng.choice(pairs)
        a, b = objs[i], objs[j]
        axes = [ax for ax, differ in (("horizontal", a.col != b.col), ("vertical", a.row != b.row)) if differ]
        axis = rng.choice(axes)
        if axis == "horizontal":
            return Question(kind, f"Is the {names[i]} left or right of the {names[j]}?",
                            "left" if a.col < b.col else "right", scene)
        return Question(kind, f"Is the {names[i]} above or below the {names[j]}?",
                        "above" if a.row < b.row else "below", scene)
    raise TenfoldError(f"unknown question kind {kind!r}; choose from: {', '.join(KINDS)}")


def questions(n: int, split: str = "train", kinds=QA_KINDS, seed: int = 0, max_objects: int = 4) -> list[Question]:
    """``n`` questions, kinds in turn (round robin), each about a different scene of ``split`` (at most
    ``max_objects`` objects: 1 gives the single-object scenes of a curriculum's first stage)."""
    kinds = list(kinds)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise TenfoldError(f"unknown question kind(s) {bad}; choose from: {', '.join(KINDS)}")
    rng = random.Random(f"questions:{split}:{seed}")
    out: list[Question] = []
    pool = scenes(8 * n + 16, split, seed=seed, max_objects=max_objects)
    for scene in pool:
        if len(out) == n:
            break
        q = ask(scene, kinds[len(out) % len(kinds)], rng)
        if q is not None:
            out.append(q)
    if len(out) < n:
        raise TenfoldError(f"could only make {len(out)} of {n} questions from the {split} scenes")
    return out


def normalise(text: str) -> str:
    """First word of an answer, lower case, number words as digits ("Three." -> "3")."""
    words = re.findall(r"[a-z0-9]+", text.lower())
    if not words:
        return ""
    word = words[0]
    digits = {w: str(k) for k, w in COUNT_WORDS.items()}
    return digits.get(word, word)


def caption_recall(generated: str, scene: Scene) -> float:
    """Fraction of the scene's objects whose full phrase ("small red circle") the generated caption contains."""
    text = " ".join(re.findall(r"[a-z]+", generated.lower()))
    return sum(f"{o.size} {o.colour} {o.shape}" in text for o in scene.objects) / len(scene.objects)


def is_correct(q: Question, generated: str) -> float:
    """1.0 / 0.0 for one-word answers; caption recall (0..1) for captions."""
    if q.kind == "caption":
        return caption_recall(generated, q.scene)
    return float(normalise(generated) == q.answer)
