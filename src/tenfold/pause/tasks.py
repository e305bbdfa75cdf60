"""Downstream tasks where extra computation per answer should help (Goyal et al. 2023, Sec. 4.1, in miniature).

The paper fine-tunes on reasoning (GSM8k), QA (SQuAD, CoQA), commonsense and fact recall tasks. At our scale
the tasks are generated, so that held-out accuracy is exact and unlimited:

- ``add``: multi-digit addition ("482+39=" -> "521"); the first answer digit depends on every carry.
- ``count``: how many times a letter occurs in a string of letters.
- ``sort``: a list of digits in ascending order.
- ``reading``: a short generated passage about people and objects, then a question about one of them
  (reading comprehension in the manner of SQuAD, with the answer a number from the passage).

Every generator is deterministic by seed; ``split`` keeps train and test apart by construction (held-out
examples are drawn from a separate seed stream and any exact train prompt is removed).
"""
from __future__ import annotations

import random

from tenfold.errors import TenfoldError

NAMES = ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo"]
THINGS = ["apples", "books", "coins", "letters", "pears", "ribbons", "shells", "stamps", "cups", "hats"]


def _add(rng: random.Random, digits: int = 3) -> tuple[str, str]:
    a = rng.randrange(10 ** (digits - 1), 10 ** digits)
    b = rng.randrange(1, 10 ** rng.randint(1, digits))
    return f"{a}+{b}=", str(a + b)


def _count(rng: random.Random, length: int = 12) -> tuple[str, str]:
    letters = "abcd"
    s = "".join(rng.choice(letters) for _ in range(length))
    target = rng.choice(letters)
    return f"count {target} in {s}:", str(s.count(target))


def _sort(rng: random.Random, length: int = 5) -> tuple[str, str]:
    xs = [rng.randrange(10) for _ in range(length)]
    return "sort " + " ".join(map(str, xs)) + ":", " ".join(map(str, sorted(xs)))


def _reading(rng: random.Random, people: int = 3) -> tuple[str, str]:
    names = rng.sample(NAMES, people)
    facts = [(n, rng.choice(THINGS), rng.randrange(2, 20)) for n in names]
    passage = " ".join(f"{n} has {k} {t}." for n, t, k in facts)
    n, t, k = rng.choice(facts)
    return f"{passage} How many {t} does {n} have?", str(k)


TASKS = {"add": _add, "count": _count, "sort": _sort, "reading": _reading}


def check_tasks(names) -> list[str]:
    names = list(names)
    unknown = [n for n in names if n not in TASKS]
    if unknown or not names:
        raise TenfoldError(f"unknown task {unknown[0] if unknown else '(none)'}; known: {', '.join(TASKS)}")
    return names


def examples(task: str, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` (prompt, answer) pairs of ``task``, deterministic in ``seed``."""
    check_tasks([task])
    rng = random.Random(f"{task}:{seed}")
    return [TASKS[task](rng) for _ in range(n)]


def split(task: str, n_train: int, n_test: int, seed: int = 0) -> tuple[list, list]:
    """Train and held-out test pairs; no test prompt occurs among the training prompts."""
    train = examples(task, n_train, seed)
    seen = {p for p, _ in train}
    test, k = [], 0
    while len(test) < n_test:
        batch = examples(task, n_test, 10_000 + seed * 100 + k)
        test += [(p, a) for p, a in batch if p not in seen][: n_test - len(test)]
        k += 1
        if k > 50:
            raise TenfoldError(f"cannot draw {n_test} held-out {task} examples distinct from training")
    return train, test
