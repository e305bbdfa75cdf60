"""Compositional instructions for Kosmos-G's instruction-tuning stage (Pan et al. 2023, Sec. 2.4), in the world.

Each example interleaves subject images (one object each, centred) with text, and has a target scene rendered by
the world, so a generated image can be scored exactly with the world's parser:

- ``side by side``: "<image> and <image> side by side" -> subject 1 left, subject 2 right;
- ``above``: "<image> above <image>" -> subject 1 on top, subject 2 below;
- ``recolour``: "the <image> shape, in green" -> the subject's shape and size, in the named colour;
- ``in a row``: "<image>, <image> and <image> in a row" -> the three subjects left to right across the middle row.

Subjects are drawn from a split's (colour, shape) pairs (``unseen``: at least one held-out pair), so held-out
subjects test zero-shot subject-driven generation. ``caption_pairs`` gives the text-only data of the "align" stage.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

from tenfold.errors import TenfoldError
from tenfold.vision.world import COLOURS, HELD_OUT, SHAPES, SIZES, Obj, Scene, render, scenes

TASKS = ("side by side", "above", "recolour", "in a row")
MULTI_SUBJECT = ("side by side", "above", "in a row")  # the tasks with more than one subject image


@dataclass(frozen=True)
class Instruction:
    task: str
    prompt: str  # with one <image> placeholder per subject
    subjects: tuple[Obj, ...]
    target: Scene

    def subject_images(self, size: int = 64) -> list:
        return [render(Scene([o], "black"), size) for o in self.subjects]

    def target_image(self, size: int = 32):
        return render(self.target, size)


def _subject(rng: random.Random, split: str, held_out: bool) -> Obj:
    while True:
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        if held_out:
            colour, shape = rng.choice(sorted(HELD_OUT))
        if held_out or split == "unseen" or (colour, shape) not in HELD_OUT:
            return Obj(shape, colour, rng.choice(SIZES), 1, 1)


def _at(o: Obj, row: int, col: int, colour: str | None = None) -> Obj:
    return Obj(o.shape, colour or o.colour, o.size, row, col)


def instruction(task: str, seed: int, split: str = "train") -> Instruction:
    """One instruction of ``task``; deterministic in (task, seed, split)."""
    if task not in TASKS:
        raise TenfoldError(f"unknown task {task!r}; choose from: {', '.join(TASKS)}")
    if split not in ("train", "test", "unseen"):
        raise TenfoldError(f"unknown split {split!r}")
    rng = random.Random(f"kosmos:{task}:{split}:{seed}")
    first = _subject(rng, split, held_out=split == "unseen")
    if task == "recolour":
        colour = rng.choice([c for c in COLOURS if c != first.colour and
                             (split == "unseen" or (c, first.shape) not in HELD_OUT)])
        return Instruction(task, f"the <image> shape, in {colour}", (first,),
                           Scene([_at(first, 1, 1, colour)], "black", seed))
    second = _subject(rng, split, held_out=False)
    if task == "in a row":
        third = _subject(rng, split, held_out=False)
        return Instruction(task, "<image>, <image> and <image> in a row", (first, second, third),
                           Scene([_at(first, 1, 0), _at(second, 1, 1), _at(third, 1, 2)], "black", seed))
    if task == "side by side":
        return Instruction(task, "<image> and <image> side by side", (first, second),
                           Scene([_at(first, 1, 0), _at(second, 1, 2)], "black", seed))
    return Instruction(task, "<image> above <image>", (first, second),
                       Scene([_at(first, 0, 1), _at(second, 2, 1)], "black", seed))


def instructions(n: int, split: str = "train", tasks=TASKS, seed: int = 0) -> list[Instruction]:
    """``n`` instructions, tasks in turn; train / test / unseen never share a seed."""
    base = {"train": 0, "test": 5_000_000, "unseen": 9_000_000}.get(split, 0)
    tasks = list(tasks)
    return [instruction(tasks[i % len(tasks)], base + seed * 1_000_003 + i, split) for i in range(n)]


def caption_pairs(n: int, seed: int = 0) -> list[str]:
    """Captions of training scenes (the text-only data of the align stage)."""
    rng = random.Random(f"align:{seed}")
    return [rng.choice(s.captions()) for s in scenes(n, "train", seed=seed + 31)]


def target_caption(instr: Instruction) -> str:
    """A caption of the target scene in the world's own phrasing (what a text-only decoder would be given)."""
    if instr.task == "recolour":
        return f"{instr.target.objects[0].phrase()} in the centre"
    if instr.task == "in a row":  # the world's listing, left to right
        return instr.target.captions(1)[0]
    relation = "left of" if instr.task == "side by side" else "above"
    return f"{instr.subjects[0].phrase()} {relation} {instr.subjects[1].phrase()}"


def decoder_scenes(n: int, seed: int = 0, target_share: float = 0.5) -> list[Scene]:
    """Training scenes for the decoder: ``target_share`` laid out like the instruction targets (train split),
    the rest one or two objects anywhere; all on black, as the targets are (which hold one to three)."""
    k = round(n * target_share)
    targets = [i.target for i in instructions(k, "train", seed=seed + 17)]
    others = [Scene(s.objects, "black", s.seed) for s in scenes(n - k, "train", seed=seed, max_objects=2)]
    return targets + others
