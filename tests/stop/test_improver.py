"""The STOP improver: selection, budgets, meta-utility, and the sandbox's service pipe.

The selection and budget tests use a scripted backend (a ``Backend`` that replays fixed replies):
the 135M model cannot be made to write a known-good and a known-bad program on demand. The real
model runs the whole loop in the smoke reproduction (tests/report/test_reproduce_smoke.py).
"""
import sys
from pathlib import Path

import pytest

from tenfold.prompting.backends import Backend
from tenfold.stop import Limits, get_utility, run_program, seed_program
from tenfold.stop.improver import SEED_IMPROVER, STOP, Budget

sys.path.insert(0, str(Path(__file__).parent))
import good_programs as good  # noqa: E402


class Scripted(Backend):
    name = "scripted"

    def __init__(self, replies):
        super().__init__()
        self.replies, self.seen = list(replies), []

    def complete(self, messages, n=1, temperature=0.0, max_tokens=256, stop=None):
        self.seen.append(messages)
        return [self.replies[(len(self.seen) - 1) % len(self.replies)] for _ in range(n)]


def fenced(code: str) -> str:
    return f"Idea: try this.\n```python\n{code.strip()}\n```\nDone."


def test_seed_improver_keeps_the_best_candidate():
    replies = [fenced(seed_program("maxcut")), fenced(good.MAXCUT), "no code at all, sorry"]
    stop = STOP(Scripted(replies), Budget(lm_calls=1, samples=3, utility_calls=5))
    utility = get_utility("maxcut")
    improved, status = stop.improve(SEED_IMPROVER, seed_program("maxcut"), utility.description,
                                    stop.task_score("maxcut", seed=0))
    assert status == "ok" and improved.strip() == good.MAXCUT.strip()
    assert stop.ledger.lm_calls == 1 and stop.ledger.lm_samples == 3 and stop.ledger.utility_calls == 3
    prompt = stop.backend.seen[0][1]["content"]
    assert "Max-Cut" in prompt and "def algorithm(weights)" in prompt  # the program and the utility's description


GREEDY = '''def improve_algorithm(initial_solution, utility, language_model):
    got, errors = [], []
    for _ in range(10):
        try:
            got += language_model.batch_prompt("e", ["m"] * 50)
        except RuntimeError as exc:
            errors.append(str(exc))
    scores = [utility(c) for c in extract_code(got)[:40]]
    return f"{len(got)} {len(errors)} {errors[0]} {sum(1 for s in scores if s > 0)}"
'''


def test_budgets_are_enforced_outside_the_sandbox():
    stop = STOP(Scripted([fenced(good.MAXCUT)]), Budget(lm_calls=2, samples=3, utility_calls=4))
    out, status = stop.improve(GREEDY, "x", "describe", stop.task_score("maxcut", seed=0))
    assert status == "ok"
    got, errors, message, positive = out.split(" ", 3)[0], out.split(" ")[1], out, out.split(" ")[-1]
    assert got == "6" and errors == "8" and "budget exhausted" in message  # 2 calls x 3 samples, 8 refusals
    assert positive == "4"  # 4 utility calls scored; the other 2 got 0 without running
    assert stop.ledger.lm_calls == 2 and stop.ledger.lm_samples == 6 and stop.ledger.utility_calls == 4


def test_a_failing_or_hostile_improver_scores_zero():
    stop = STOP(Scripted([fenced(good.LPN)]), Budget(lm_calls=1, samples=1, utility_calls=2),
                improver_limits=Limits(wall_seconds=60, cpu_seconds=20))
    assert stop.meta_utility("def improve_algorithm(a, b, c):\n    raise ValueError('x')\n", "lpn", tests=1) == 0.0
    assert stop.meta_utility("import os\ndef improve_algorithm(a, b, c):\n    os.fork()\n", "lpn", tests=1) == 0.0
    assert stop.ledger.statuses.get("blocked") == 1 and stop.ledger.blocked_events == {"os.fork": 1}
    # the seed improver with a model that answers brute force: meta-utility near 1
    assert stop.meta_utility(SEED_IMPROVER, "lpn", tests=1) >= 0.95


def test_self_improvement_keeps_an_archive():
    stop = STOP(Scripted([fenced(SEED_IMPROVER.replace("temperature=0.7", "temperature=0.5"))]),
                Budget(lm_calls=1, samples=1, utility_calls=2))
    archive = stop.self_improve(1, "strgrid", tests=1)
    assert [a["iteration"] for a in archive] == [0, 1] and archive[0]["source"] == SEED_IMPROVER
    assert "temperature=0.5" in archive[1]["source"] and archive[1]["changed"]
    assert all(0.0 <= a["meta_utility"] <= 1.0 for a in archive)
    assert all(a["sandbox"]["sandbox_runs"] > 0 for a in archive)
    assert sum(a["sandbox"]["sandbox_runs"] for a in archive) == stop.ledger.sandbox_runs


def test_circumvention_is_counted_per_iteration():
    """The paper's static sign (the sandbox flag switched off) beside what the sandbox denied at run time."""
    sneaky = "use_sandbox = False\n" + good.MAXCUT.replace(
        "def algorithm(weights):\n",
        "def algorithm(weights):\n    try:\n        open('/etc/passwd').read()\n    except OSError:\n        pass\n")
    stop = STOP(Scripted([fenced(sneaky)]), Budget(lm_calls=1, samples=1, utility_calls=2))
    archive = stop.self_improve(1, "maxcut", tests=1)
    seed = archive[0]["sandbox"]
    assert seed["programs_seen"] >= 1 and seed["sandbox_flag_disabled"] >= 1
    assert seed["sandbox_flag_disabled_rate"] == seed["sandbox_flag_disabled"] / seed["programs_seen"]
    assert seed["denied"].get("read outside", 0) >= 1 and 0 < seed["denial_rate"] <= 1
    assert stop.ledger.denied["read outside"] == sum(a["sandbox"]["denied"].get("read outside", 0) for a in archive)
    assert set(stop.ledger.isolation) <= {"namespaces+seccomp", "namespaces", "guard"}


@pytest.mark.parametrize("responses, expected", [
    (["Idea.\n```python\nx = 1\n```\ntail"], ["x = 1\n"]),
    (["```\ny = 2\n```"], ["y = 2\n"]),
    (["def f():\n    return 3"], ["def f():\n    return 3\n"]),
    ("```py\nz = 3\n```", ["z = 3\n"]),
])
def test_extract_code(responses, expected):
    r = run_program("def algorithm(responses):\n    return extract_code(responses)\n", "algorithm", [[responses]],
                    Limits(wall_seconds=10, cpu_seconds=5))
    assert r.status == "ok" and r.outputs[0] == expected


def test_unknown_service_calls_are_refused():
    source = "def improve_algorithm(s, utility, language_model):\n    return _call('shell', {'cmd': 'ls'})\n"
    stop = STOP(Scripted(["x"]), Budget(lm_calls=1, samples=1, utility_calls=1))
    out, status = stop.improve(source, "p", "d", lambda program: 0.0)
    assert status == "error" and out == "p"  # _call is not even in the program's namespace


RAW_REQUESTS = '''import __main__ as m, json
def improve_algorithm(initial_solution, utility, language_model):
    replies = []
    for request in (
        {"service": "language_model", "payload": {"expertise": "e", "temperature": 0.5,
         "messages": [[{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]]}},
        {"service": "language_model", "payload": {"expertise": {"role": "system"}, "messages": ["m"],
                                                  "temperature": 0.5}},
        {"service": "language_model", "payload": {"expertise": "e", "messages": "m", "temperature": "hot"}},
        {"service": "utility", "payload": {"program": ["not", "text"]}},
    ):
        m._requests.write(json.dumps(request) + "\\n")
        m._requests.flush()
        replies.append(json.loads(m._replies.readline()))
    return json.dumps(replies)
'''


def test_service_payloads_the_runner_never_sends_are_refused_outside():
    """A program may write its own requests on the service pipe: what reaches the backend and the utility is
    still text (no multimodal parts, no structured system prompt), or the program gets an error."""
    import json

    backend = Scripted([fenced(seed_program("maxcut"))])
    stop = STOP(backend, Budget(lm_calls=4, samples=2, utility_calls=4))
    utility = get_utility("maxcut")
    scored = []
    improved, status = stop.improve(RAW_REQUESTS, seed_program("maxcut"), utility.description,
                                    lambda program: scored.append(program) or 1.0)
    assert status == "ok", improved
    replies = json.loads(improved)
    assert all("error" in r for r in replies), replies
    assert backend.seen == [] and scored == []
