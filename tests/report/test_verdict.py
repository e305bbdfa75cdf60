"""The verdict rule (issue 42): synthetic results with known effects and known noise get the verdict they should,
intervals cover at their nominal rate, and an experiment without intervals is refused."""
import math

import numpy as np
import pytest

from tenfold.report.verdict import (Check, Estimate, accuracy_difference, bootstrap, decide, difference, exact,
                                    from_record, paired_difference, proportion, ratio_of_means, spread)


def _strategies(p_a: float, p_b: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.random(n) < p_a).astype(float), (rng.random(n) < p_b).astype(float)


def test_wilson_matches_the_textbook_values():
    e = proportion(5, 10)
    assert 0.23 < e.low < 0.24 and 0.76 < e.high < 0.77 and e.n == 10 and e.method == "Wilson"
    assert proportion(0, 10).low == 0.0 and proportion(10, 10).high == 1.0
    with pytest.raises(ValueError):
        proportion(0, 0)
    with pytest.raises(ValueError):
        proportion(11, 10)


def test_a_large_true_effect_is_reproduced():
    a, b = _strategies(0.6, 0.3, 300, seed=1)
    check = Check("a beats b", accuracy_difference(a, b))
    assert check.status == "shown" and decide([check]) == "reproduced"
    assert check.effect.low > 0 and check.to_decide == ""


def test_no_effect_measured_tightly_is_not_reproduced():
    a, b = _strategies(0.5, 0.5, 4000, seed=2)
    check = Check("a beats b", accuracy_difference(a, b), smallest=0.1)  # the paper's gap: 10 points
    assert check.status == "contradicted"
    losses = np.random.default_rng(2).normal(3.0, 1.0, 4000)
    check = Check("a lowers the loss", paired_difference(losses, losses + 0.001), smallest=0.1)
    assert check.status == "contradicted" and decide([check]) == "not reproduced"


def test_a_true_effect_on_too_few_samples_is_inconclusive_and_says_what_would_decide_it():
    checks = [Check("a beats b", accuracy_difference(*_strategies(0.6, 0.3, 6, seed=s))) for s in range(200)]
    # a real 30-point gap on 6 problems: mostly undecided, never contradicted
    assert sum(c.status == "undecided" for c in checks) >= 140 and not any(c.status == "contradicted" for c in checks)
    null = [Check("a beats b", accuracy_difference(*_strategies(0.45, 0.45, 6, seed=s))) for s in range(200)]
    assert sum(c.status == "shown" for c in null) <= 10  # no gap: shown at most at about the 2.5% error rate
    check = next(c for c in checks if c.effect.value > 0)
    assert decide([check]) == "inconclusive" and "problems at the observed effect" in check.to_decide
    # a paired bootstrap of a handful of items gives no interval at all rather than a falsely narrow one
    assert math.isinf(paired_difference([1.0, 2.0, 3.0], [0.0, 1.0, 2.5]).high)


def test_every_variant_at_chance_is_inconclusive_whatever_the_interval():
    check = Check("pauses help", difference(proportion(30, 300), proportion(20, 300)), at_chance=True)
    assert check.effect.low > -1 and check.status == "undecided" and decide([check]) == "inconclusive"
    assert "chance" in check.to_decide


def test_parts_shown_and_parts_not_are_partly():
    shown = Check("one", exact(3.0), threshold=2.0)
    undecided = Check("two", spread([1.0, 3.0]), threshold=1.5)
    contradicted = Check("three", exact(1.0), threshold=2.0)
    assert decide([shown, undecided]) == "partly" and decide([shown, contradicted]) == "partly"
    assert decide([undecided, contradicted]) == "not reproduced"
    assert decide([shown, shown]) == "reproduced"
    with pytest.raises(ValueError):
        decide([])


def test_an_effect_in_the_claimed_direction_but_smaller_than_claimed_is_partly_not_shown():
    small = Check("gain", spread([0.010, 0.012, 0.011, 0.013]), smallest=0.05)
    assert small.status == "smaller than claimed" and small.effect.low > 0
    assert decide([small]) == "partly" and decide([small, Check("x", exact(1.0), threshold=2.0)]) == "partly"
    maybe_none = Check("gain", spread([-0.01, 0.02, 0.0, 0.01]), smallest=0.05)  # could be 0, cannot be 0.05
    assert maybe_none.status == "contradicted" and decide([maybe_none]) == "not reproduced"
    flat = spread([500.0] * 12)  # a t interval with no spread is said to be one
    assert flat.low == flat.high == 500 and "all values equal" in flat.method and "[500.000, 500.000]" in flat.text()
    # but a few equal repeats (two seeds whose accuracies both round to 0) or 0/1 items bound nothing
    assert math.isinf(spread([0.0, 0.0]).high) and math.isinf(bootstrap(np.mean, [1.0] * 8).high)


def test_below_direction_and_one_repeat():
    assert Check("growth stays small", exact(0.01), threshold=0.05, direction="below").status == "shown"
    assert Check("growth stays small", exact(0.20), threshold=0.05, direction="below").status == "contradicted"
    one = Check("speed-up", spread([25.0]), threshold=20.0)
    assert one.status == "undecided" and "at least 2 give one" in one.to_decide
    assert math.isinf(one.effect.high)


def test_intervals_cover_at_about_their_nominal_rate():
    """Out of 300 simulated experiments, the 95% intervals hold the true value about 95% of the time."""
    rng = np.random.default_rng(4)
    hits_w = hits_b = hits_t = 0
    for _ in range(300):
        draws = rng.random(40) < 0.3
        e = proportion(int(draws.sum()), 40)
        hits_w += e.low <= 0.3 <= e.high
        values = rng.normal(5.0, 2.0, 30)
        b = bootstrap(np.mean, values)
        hits_b += b.low <= 5.0 <= b.high
        t = spread(rng.normal(5.0, 2.0, 4))
        hits_t += t.low <= 5.0 <= t.high
    assert 0.90 <= hits_w / 300 <= 0.99, hits_w
    assert 0.88 <= hits_b / 300 <= 0.99, hits_b  # the percentile bootstrap runs a little narrow at n = 30
    assert 0.90 <= hits_t / 300 <= 0.99, hits_t


def test_ratio_of_means_and_the_record_round_trip():
    rng = np.random.default_rng(5)
    base = rng.normal(2.0, 0.2, 200)
    ratio = ratio_of_means(base * 1.6 + rng.normal(0, 0.05, 200), base)
    assert 1.55 < ratio.value < 1.65 and ratio.low < ratio.value < ratio.high
    check = Check("window / sink perplexity", ratio, threshold=1.0, smallest=2.0)
    assert check.status == "smaller than claimed"  # well above 1, but tightly short of the 2x the claim means
    assert decide([check]) == "partly"  # the direction holds, the size does not
    back = from_record({**check.record(), "effect": {**check.record()["effect"]}})
    assert back.status == check.status and back.effect == check.effect
    unbounded = Check("x", spread([1.0]))
    rec = unbounded.record()
    rec["effect"] = {**rec["effect"], "low": None, "high": None}  # how the result file stores infinities
    assert from_record(rec).status == "undecided"


def test_an_estimate_must_hold_its_value():
    for bad in ((1.0, 2.0, 3.0, 5), (float("inf"),) * 3 + (5,), (1.0, 0.9, 1.1, 0), (1.0, 0.9, 1.1, -1),
                (1.0, 1.1, 0.9, 5), ("1", 0.9, 1.1, 5), (float("nan"), 0.0, 1.0, 0)):
        with pytest.raises(ValueError):
            Estimate(*bad, "made up")
    for kw in ({"threshold": float("nan")}, {"threshold": 0.5, "smallest": 0.1}, {"smallest": float("nan")},
               {"at_chance": "no"}, {"threshold": "0"}):
        with pytest.raises(ValueError):
            Check("x", exact(1.0), **kw)


def test_what_an_experiment_hands_back_is_not_taken_at_its_word(tmp_path):
    """issue 42 attack: a generator of checks, a status set after construction, a subclass computing its own status,
    duplicate names: the runner rebuilds every check or refuses."""
    from tenfold.report.registry import Experiment
    from tenfold.report.runner import run_one

    def run(checks):
        rec = run_one(Experiment("gamed", "streamingllm", "claim", {}, lambda r: {"checks": checks, "why": ""}),
                      "smoke", str(tmp_path))
        return rec["verdict"], rec.get("error", "")

    weak = Check("weak", proportion(1, 2), threshold=0.9)
    assert run(c for c in [weak])[0] == "inconclusive"  # a generator is read once, then decided like a list
    forged = Check("forged", proportion(1, 2), threshold=0.9)
    forged.status = "shown"
    assert run([forged])[0] in ("not reproduced", "inconclusive")

    class Always(Check):
        def _status(self):
            return "shown"

    verdict, error = run([Always("sub", proportion(1, 2), threshold=0.9)])
    assert verdict == "failed" and "must be a tenfold.report.verdict.Check" in error
    verdict, error = run([weak, weak])
    assert verdict == "failed" and "share the name" in error
    assert run([])[0] == "failed" and run(iter([]))[0] == "failed"


def test_an_experiment_without_checks_or_with_its_own_verdict_is_refused(tmp_path):
    from tenfold.report.registry import Experiment
    from tenfold.report.runner import run_one

    def no_checks(run):
        return {"ours": {"x": 1}, "why": "trust me"}

    def own_verdict(run):
        return {"ours": {}, "checks": [Check("x", exact(1.0))], "verdict": "reproduced"}

    def honest(run):
        return {"ours": {}, "checks": [Check("x", spread([1.0, 1.2, 0.9]), threshold=5.0)], "why": "small"}

    for fn, word in ((no_checks, "no checks"), (own_verdict, "verdict of its own")):
        rec = run_one(Experiment("synthetic", "streamingllm", "claim", {}, fn), "smoke", str(tmp_path))
        assert rec["status"] == "failed" and word in rec["error"], rec["error"]
    rec = run_one(Experiment("synthetic", "streamingllm", "claim", {}, honest), "smoke", str(tmp_path))
    assert rec["status"] == "ok" and rec["verdict"] == "not reproduced"
    assert rec["checks"][0]["status"] == "contradicted" and "interval" in rec["rule"]


def test_an_unmeasured_part_keeps_the_verdict_from_reproduced():
    from tenfold.report.verdict import unmeasured

    missing = Check("llama.cpp / ours", unmeasured("llama.cpp is not installed", "repeats"), threshold=0.75)
    assert missing.status == "undecided" and "not installed" in missing.to_decide
    assert "not measured" in missing.effect.text()
    assert decide([Check("other part", exact(2.0), threshold=1.0), missing]) == "partly"
    rec = missing.record()
    rec["effect"] = {**rec["effect"], "value": None, "low": None, "high": None}  # as the result file stores it
    assert from_record(rec).status == "undecided"
