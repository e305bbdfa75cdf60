"""Analogical prompting: prompts, answer extraction, the math and code tasks, the CLI."""
import json
import subprocess
import sys

import pytest

from tenfold.errors import TenfoldError
from tenfold.prompting.analogical import STRATEGIES, build_messages
from tenfold.prompting.answers import extract_answer, is_correct, to_number
from tenfold.prompting.evaluation import gsm_problems, humaneval_problems, passes, program_for


@pytest.mark.parametrize("text, answer", [
    ("so the total is \\boxed{1,250}.", "1,250"),
    ("\\boxed{\\frac{1}{2}} and later \\boxed{42}", "42"),
    ("\\boxed{x^{2}}", "x^{2}"),
    ("Work...\n#### 72\n", "72"),
    ("The answer is $18.50.", "18.50"),
    ("Final answer: 7 apples", "7"),
    ("first 3 then 4 then 5", "5"),
    ("no numbers here", None),
    ("", None),
])
def test_extract_answer(text, answer):
    assert extract_answer(text) == answer


def test_answers_compare_as_numbers():
    assert is_correct("\\boxed{1,000}", 1000) and is_correct("The answer is $1000.00.", "1000")
    assert is_correct("#### 12%", "12") and not is_correct("\\boxed{13}", 12)
    assert not is_correct("I do not know", 5)
    assert to_number("\\$3.5") == 3.5 and to_number("abc") is None


def test_every_strategy_builds_its_prompt():
    problem = "Tom has 3 apples and buys 4 more. How many apples does he have?"
    shots = [("1+1?", "1+1=2. \\boxed{2}"), ("2+2?", "\\boxed{4}"), ("3+3?", "\\boxed{6}")]
    texts = {s: build_messages(s, problem, "math", 3, shots)[-1]["content"] for s in STRATEGIES}
    assert all(problem in t and "\\boxed{}" in t for t in texts.values())
    assert "step by step" in texts["zero-shot-cot"] and "step by step" not in texts["zero-shot"]
    assert all(q in texts["few-shot-cot"] for q, _ in shots)
    assert "recall 3" in texts["analogical"] and "distinct" in texts["analogical"]
    assert "Core concepts" in texts["analogical-knowledge"] and "Core concepts" not in texts["analogical"]
    code = build_messages("analogical", "def f(x):\n    pass", "code", 5)[-1]["content"]
    assert "recall 5 programming problems" in code and "```python" in code
    with pytest.raises(TenfoldError, match="worked examples"):
        build_messages("few-shot-cot", problem, "math", 3, shots[:1])
    with pytest.raises(TenfoldError, match="unknown strategy"):
        build_messages("telepathy", problem)


def test_math_splits_are_disjoint_and_fixed():
    test, train = gsm_problems(20), gsm_problems(20, "train")
    assert test == gsm_problems(20)  # fixed seeds
    assert not {p["question"] for p in test} & {p["question"] for p in train}
    assert all(p["answer"] for p in test)


def test_humaneval_canonical_solution_passes_and_a_wrong_one_fails():
    problem = humaneval_problems(1)[0]
    assert problem["task_id"] == "HumanEval/20"  # 0-19 are the exemplar pool
    fenced = f"Here:\n```python\n{problem['prompt']}{problem['canonical_solution']}```"
    assert passes(problem, fenced) == (True, "ok")
    assert passes(problem, problem["canonical_solution"])[0]  # a bare body continues the prompt
    assert passes(problem, "```python\ndef " + problem["entry_point"] + "(*a):\n    return None\n```") == (False, "error")
    assert passes(problem, "```python\nimport os\nos.fork()\n```")[1] == "blocked"
    assert program_for(problem, "```python\ndef other():\n    pass\n```").startswith(problem["prompt"])


@pytest.mark.slow
def test_cli_eval_with_the_bundled_model():
    out = subprocess.run([sys.executable, "-m", "tenfold", "analogical", "eval", "--strategy", "analogical",
                          "--task", "gsm", "--n", "1", "--max-tokens", "32", "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    r = json.loads(out.stdout)
    assert r["n"] == 1 and 0 <= r["accuracy"] <= 1 and 0 < r["tokens_per_problem"] <= 32
    row = r["rows"][0]
    assert row["id"] == "gsm-test-0" and row["completion"].strip() and str(row["gold"]).strip()
    from tenfold.prompting.evaluation import gsm_problems

    assert row["gold"] == gsm_problems(1)[0]["answer"]  # the reference answer, so a reader can check the verdict


def test_cli_bad_input_is_one_line():
    out = subprocess.run([sys.executable, "-m", "tenfold", "analogical", "eval", "--strategy", "analogical",
                          "--task", "gsm", "--n", "0"], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "must be >= 1" in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_evaluation_through_an_openai_compatible_server(server):
    from tenfold.prompting.backends import OpenAICompatible
    from tenfold.prompting.evaluation import evaluate

    remote = OpenAICompatible(server + "/v1", "smollm2-135m-instruct")
    r = evaluate(remote, "analogical", "gsm", 1, k=2, max_tokens=16)
    assert r["n"] == 1 and 0 < r["tokens_per_problem"] <= 16 and r["rows"][0]["tokens"] == r["tokens_per_problem"]
