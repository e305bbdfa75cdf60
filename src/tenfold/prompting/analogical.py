"""Prompting strategies of "Large Language Models as Analogical Reasoners" (Yasunaga et al. 2023, Sec. 3-4).

- ``zero-shot``: the problem and the answer format;
- ``zero-shot-cot``: plus an instruction to reason step by step first;
- ``few-shot-cot``: K worked examples drawn from a training split, then the problem;
- ``analogical``: the model first recalls K relevant and distinct problems and their solutions
  (self-generated exemplars), then solves the problem, all in one generation;
- ``analogical-knowledge``: as analogical, preceded by a short tutorial on the core concepts
  (the paper's "self-generated knowledge + exemplars", useful for code).

Each builds chat messages; math answers are asked in ``\\boxed{}``, code in one Python block.
"""
from __future__ import annotations

from tenfold.errors import TenfoldError

STRATEGIES = ("zero-shot", "zero-shot-cot", "few-shot-cot", "analogical", "analogical-knowledge")

_MATH_FORMAT = "Put the final answer, a number only, in \\boxed{}."
_CODE_FORMAT = "Give the complete function in one ```python code block."


def build_messages(strategy: str, problem: str, kind: str = "math", k: int = 3,
                   exemplars: list[tuple[str, str]] | None = None) -> list[dict]:
    """Chat messages for ``problem`` (``kind``: math or code) under ``strategy``.

    ``exemplars``: (problem, worked solution) pairs for ``few-shot-cot`` (at least ``k``).
    """
    if strategy not in STRATEGIES:
        raise TenfoldError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if kind not in ("math", "code"):
        raise TenfoldError(f"kind must be math or code, not {kind!r}")
    if not isinstance(k, int) or k < 1:
        raise TenfoldError(f"k must be a positive integer (got {k!r})")
    fmt = _MATH_FORMAT if kind == "math" else _CODE_FORMAT
    noun = "math problems" if kind == "math" else "programming problems"
    task = "Problem" if kind == "math" else "Complete this Python function"
    if strategy == "zero-shot":
        return [{"role": "user", "content": f"{task}:\n{problem}\n\n{fmt}"}]
    if strategy == "zero-shot-cot":
        return [{"role": "user", "content": f"{task}:\n{problem}\n\nThink it through step by step, then answer. {fmt}"}]
    if strategy == "few-shot-cot":
        if not exemplars or len(exemplars) < k:
            raise TenfoldError(f"few-shot-cot needs {k} worked examples from a training split")
        shots = "\n\n".join(f"{task}:\n{q}\n\nSolution:\n{a}" for q, a in exemplars[:k])
        return [{"role": "user", "content": f"Here are worked examples.\n\n{shots}\n\n{task}:\n{problem}\n\n"
                                            f"Solution (step by step, as above). {fmt}"}]
    steps = []
    if strategy == "analogical-knowledge":
        steps.append("## Core concepts: name the key ideas this problem needs and explain them in a short tutorial.")
    steps.append(f"## Recalled problems: recall {k} {noun} that are relevant to this one and distinct from each other. "
                 f"For each, state the problem and then its solution.")
    steps.append(f"## Solution: using what you recalled, solve the problem above. {fmt}")
    return [{"role": "user", "content": f"{task}:\n{problem}\n\nWork in these parts:\n" + "\n".join(steps)}]
