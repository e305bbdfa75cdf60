"""One rule from measurements to a verdict: every number a verdict uses is an :class:`Estimate` (value, 95% interval,
sample size, method), each part of a paper's claim is a :class:`Check` on one estimate, and :func:`decide` turns the
checks into ``reproduced`` / ``partly`` / ``not reproduced`` / ``inconclusive`` (issue 42).

Intervals come from scipy: Wilson score intervals for accuracies (``scipy.stats.binomtest``), Student-t intervals
over seeds or repeated rounds, percentile bootstrap intervals (``scipy.stats.bootstrap``) for means, paired
differences and ratios of per-item measurements. A deterministic quantity (a byte count, a token count) is
:func:`exact`: its interval has zero width and says so.

The rule (:data:`RULE`), read as lm-evaluation-harness reports a metric (value, interval, n) and as a reviewer reads
a small replication: a part of the claim is *shown* when its whole interval lies on the claimed side of the
threshold, *contradicted* when its whole interval lies on the other side (or below the smallest effect the claim
means), and *undecided* otherwise, or whenever every variant it compares sits at chance (no headroom to show an
effect). All parts shown: reproduced. Some shown: partly. None shown and some contradicted: not reproduced. None
shown or contradicted: inconclusive, with the sample size that would decide it at the observed effect.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

VERDICTS = ("reproduced", "partly", "not reproduced", "inconclusive")
CONFIDENCE = 0.95
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
MIN_BOOTSTRAP_ITEMS = 16  # below this a bootstrap interval is not given (it would be far too narrow)
MIN_EQUAL_REPEATS = 10  # fewer identical repeats (or bootstrap items) than this give no interval, not a zero-width one

RULE = ("Each part of the claim is a measured effect with a 95% interval. A part is shown when the whole interval lies "
        "on the claimed side of its threshold; smaller than claimed when it lies there but wholly short of the "
        "smallest effect the claim means (the direction holds, the size does not); contradicted when the whole "
        "interval lies on the other side (or, reaching the threshold, short of that smallest effect); undecided "
        "otherwise or when every variant it compares is at chance. All parts shown: reproduced; some shown or "
        "smaller than claimed: partly; none of those and some contradicted: not reproduced; nothing decided: "
        "inconclusive.")
STATUSES = ("shown", "smaller than claimed", "contradicted", "undecided")


@dataclass(frozen=True)
class Estimate:
    """A measured number with its 95% interval ``[low, high]``, the sample size ``n`` behind it (problems, seeds,
    tokens, rounds; ``unit`` names them) and the ``method`` that gave the interval."""

    value: float
    low: float
    high: float
    n: int
    method: str
    unit: str = "samples"

    def __post_init__(self):
        """ValueError unless value, low and high are numbers with ``low <= value <= high`` (a value of NaN only for
        an unmeasured part, whose interval is unbounded), ``n`` a whole number >= 0 and method / unit text."""
        numbers = (self.value, self.low, self.high)
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers):
            raise ValueError(f"value, low and high must be numbers (got {numbers!r})")
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 0:
            raise ValueError(f"n must be a whole number >= 0 (got {self.n!r})")
        if not isinstance(self.method, str) or not isinstance(self.unit, str):
            raise ValueError("method and unit must be text")
        if math.isnan(self.low) or math.isnan(self.high):
            raise ValueError("an interval bound is NaN")
        if math.isnan(self.value):
            if math.isfinite(self.low) or math.isfinite(self.high):
                raise ValueError("a value that was not measured (NaN) cannot have a finite interval")
        elif math.isinf(self.value):
            raise ValueError("a measured value must be finite")
        elif self.n == 0:
            raise ValueError("a measured value needs n >= 1 (n = 0 is for a part that was not measured)")
        elif not self.low <= self.value <= self.high:
            raise ValueError(f"interval [{self.low}, {self.high}] does not hold the value {self.value}")

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def text(self, digits: int = 3) -> str:
        """``0.412 [0.301, 0.530] (n=60 problems, Wilson)``."""
        if math.isnan(self.value):
            return self.method  # "not measured: why"
        f = f"{{:.{digits}f}}"
        interval = ("exact" if self.method.startswith("exact") else "no interval"
                    if not math.isfinite(self.half_width) else f"[{f.format(self.low)}, {f.format(self.high)}]")
        return f"{f.format(self.value)} {interval} (n={self.n} {self.unit}, {self.method})"


def exact(value: float, n: int = 1, unit: str = "measurements", why: str = "deterministic") -> Estimate:
    """A quantity with no sampling noise (a byte or token count): a zero-width interval, the reason in ``method``."""
    return Estimate(float(value), float(value), float(value), n, f"exact ({why})", unit)


def unmeasured(why: str, unit: str = "samples") -> Estimate:
    """A part of the claim this run could not measure (``why``: e.g. "llama.cpp is not installed"): no value and no
    interval, so its check stays undecided and the verdict cannot be ``reproduced``."""
    return Estimate(math.nan, -math.inf, math.inf, 0, f"not measured: {why}", unit)


def proportion(successes: int, n: int, unit: str = "problems") -> Estimate:
    """An accuracy ``successes / n`` with its Wilson score interval (``scipy.stats.binomtest``); ValueError for
    ``n < 1`` or ``successes`` outside ``[0, n]``."""
    from scipy.stats import binomtest

    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"a proportion needs 0 <= successes <= n and n >= 1 (got {successes} of {n})")
    ci = binomtest(int(successes), int(n)).proportion_ci(CONFIDENCE, method="wilson")
    value = successes / n
    return Estimate(value, min(float(ci.low), value), max(float(ci.high), value), int(n), "Wilson", unit)


def spread(values: Sequence[float], unit: str = "seeds") -> Estimate:
    """The mean of independent repeats (seeds, timing rounds) with a Student-t interval from their spread. One
    repeat has no spread: its interval is unbounded (nothing can be decided from it)."""
    from scipy.stats import t

    a = np.asarray(values, dtype=float)
    if a.size == 0:
        raise ValueError("no values")
    mean = float(a.mean())
    if a.size == 1:
        return Estimate(mean, -math.inf, math.inf, 1, "no interval: one repeat; at least 2 give one", unit)
    half = float(t.ppf(0.5 + CONFIDENCE / 2, a.size - 1) * a.std(ddof=1) / math.sqrt(a.size))
    if half == 0 and a.size < MIN_EQUAL_REPEATS:  # a few equal repeats (quantised scores) bound nothing
        return Estimate(mean, -math.inf, math.inf, int(a.size), f"no interval: {a.size} equal repeats (at least "
                        f"{MIN_EQUAL_REPEATS} equal ones, or any spread, give one)", unit)
    method = "t over repeats" + (" (all values equal)" if half == 0 else "")
    return Estimate(mean, mean - half, mean + half, int(a.size), method, unit)


def bootstrap(statistic: Callable[..., float], *samples: Sequence[float], unit: str = "items",
              paired: bool = True, method: str | None = None) -> Estimate:
    """``statistic(*samples)`` with a percentile bootstrap interval (``scipy.stats.bootstrap``, 2,000 resamples,
    seed 0); unbounded below :data:`MIN_BOOTSTRAP_ITEMS` items. ``paired``: the samples are measurements of the same items (resampled together), so they must have one
    length. ``statistic`` takes 1-D arrays and returns a number. Identical values give a zero-width interval."""
    from scipy.stats import bootstrap as scipy_bootstrap

    arrays = [np.asarray(s, dtype=float) for s in samples]
    if not arrays or any(a.size == 0 for a in arrays):
        raise ValueError("bootstrap needs non-empty samples")
    if paired and len({a.size for a in arrays}) > 1:
        raise ValueError(f"paired samples must have one length (got {[a.size for a in arrays]})")
    value = float(statistic(*arrays))
    n = int(arrays[0].size) if paired else int(min(a.size for a in arrays))
    name = method or ("bootstrap, paired" if paired and len(arrays) > 1 else "bootstrap")
    if n < MIN_BOOTSTRAP_ITEMS:  # resampling a handful of items gives intervals far too narrow
        return Estimate(value, -math.inf, math.inf, n, f"no interval: fewer than {MIN_BOOTSTRAP_ITEMS} items to "
                        "bootstrap", unit)
    if all(np.all(a == a[0]) for a in arrays):
        if n < 2 * MIN_BOOTSTRAP_ITEMS:  # e.g. 8 correct of 8: Wilson says [0.68, 1], not [1, 1]
            return Estimate(value, -math.inf, math.inf, n, f"no interval: all {n} items equal (at least "
                            f"{2 * MIN_BOOTSTRAP_ITEMS} give one)", unit)
        return Estimate(value, value, value, n, f"{name} (all values equal)", unit)
    res = scipy_bootstrap(tuple(arrays), lambda *a, axis=-1: _along(statistic, a, axis), paired=paired,
                          vectorized=True, n_resamples=BOOTSTRAP_RESAMPLES, confidence_level=CONFIDENCE,
                          method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if math.isnan(low) or math.isnan(high):
        low = high = value
    return Estimate(value, min(low, value), max(high, value), n, name, unit)


def _along(statistic, arrays, axis):
    """Apply a 1-D ``statistic`` along ``axis`` of resampled arrays (scipy passes a batch of resamples)."""
    arrays = [np.moveaxis(np.asarray(a), axis, -1) for a in arrays]
    batch = arrays[0].shape[:-1]
    out = np.empty(batch)
    for idx in np.ndindex(*batch):
        out[idx] = statistic(*(a[idx] for a in arrays))
    return out


def mean(values: Sequence[float], unit: str = "items") -> Estimate:
    """The mean of per-item values with a bootstrap interval."""
    return bootstrap(np.mean, values, unit=unit)


def paired_difference(a: Sequence[float], b: Sequence[float], unit: str = "items") -> Estimate:
    """Mean of ``a - b`` over the same items (e.g. per-item losses of two methods), paired bootstrap interval."""
    return bootstrap(lambda x, y: float(np.mean(x) - np.mean(y)), a, b, unit=unit)


def accuracy_difference(a: Sequence[bool], b: Sequence[bool], unit: str = "problems") -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` (per-problem correctness, the same problems or not) with Newcombe's
    interval from the two Wilson intervals. It ignores any pairing, so it errs wide, never narrow: on a handful of
    problems a bootstrap of 0/1 values gives zero-width intervals."""
    return difference(proportion(int(sum(map(bool, a))), len(a), unit), proportion(int(sum(map(bool, b))), len(b), unit))


def ratio_of_means(a: Sequence[float], b: Sequence[float], unit: str = "items", paired: bool = True) -> Estimate:
    """``mean(a) / mean(b)`` with a bootstrap interval (paired: the same items measured twice)."""
    return bootstrap(lambda x, y: float(np.mean(x) / np.mean(y)), a, b, unit=unit, paired=paired)


def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` for two independent estimates: the interval combines each side's distance to its bound in
    quadrature (Newcombe's method when both are Wilson intervals). ``n`` is the smaller of the two."""
    value = a.value - b.value
    below = math.hypot(a.value - a.low, b.high - b.value)
    above = math.hypot(a.high - a.value, b.value - b.low)
    method = "Newcombe" if a.method == b.method == "Wilson" else "difference of independent intervals"
    return Estimate(value, value - below, value + above, min(a.n, b.n), method, a.unit)


@dataclass
class Check:
    """One part of a paper's claim: the measured ``effect`` should lie above ``threshold`` (``direction`` "above")
    or below it ("below"). ``smallest``: the smallest effect the claim means (e.g. the paper's gap), so a tight
    interval short of it contradicts the claim even when it sits on the claimed side of ``threshold``.
    ``at_chance``: every variant compared is at chance, so the check cannot be decided whatever the interval."""

    name: str
    effect: Estimate
    threshold: float = 0.0
    direction: str = "above"
    smallest: float | None = None
    at_chance: bool = False
    status: str = field(default="", init=False)
    to_decide: str = field(default="", init=False)

    def __post_init__(self):
        """ValueError for a check that does not say what it claims: a name that is not text, an effect that is not
        an :class:`Estimate`, a threshold that is not a finite number, a ``smallest`` that is not a finite number
        beyond the threshold on the claimed side, a direction other than above / below, a non-boolean at_chance."""
        if not isinstance(self.name, str) or not self.name:
            raise ValueError("a check needs a name")
        if type(self.effect) is not Estimate:
            raise ValueError(f"{self.name}: effect must be an Estimate (got {type(self.effect).__name__})")
        if self.direction not in ("above", "below"):
            raise ValueError(f"direction must be 'above' or 'below' (got {self.direction!r})")
        if not _finite_number(self.threshold):
            raise ValueError(f"{self.name}: threshold must be a finite number (got {self.threshold!r})")
        if self.smallest is not None and not (_finite_number(self.smallest) and (
                self.smallest > self.threshold if self.direction == "above" else self.smallest < self.threshold)):
            raise ValueError(f"{self.name}: smallest must be a finite number {self.direction} the threshold "
                             f"{self.threshold} (got {self.smallest!r})")
        if not isinstance(self.at_chance, bool):
            raise ValueError(f"{self.name}: at_chance must be true or false (got {self.at_chance!r})")
        self.status = self._status()
        self.to_decide = self._to_decide() if self.status == "undecided" else ""

    def _signed(self) -> tuple[float, float, float, float, float | None]:
        """(value, low, high, threshold, smallest) turned so that the claim is always "above"."""
        e = self.effect
        if self.direction == "above":
            return e.value, e.low, e.high, self.threshold, self.smallest
        return (-e.value, -e.high, -e.low, -self.threshold,
                None if self.smallest is None else -self.smallest)

    def _status(self) -> str:
        if self.at_chance:
            return "undecided"
        value, low, high, threshold, smallest = self._signed()
        if high < threshold:
            return "contradicted"
        if smallest is not None and high < smallest:  # as large as the claim means is ruled out
            return "smaller than claimed" if low > threshold else "contradicted"
        return "shown" if low > threshold else "undecided"

    def _to_decide(self) -> str:
        """The sample size that would decide this check if the observed effect held (the interval shrinks as
        1 / sqrt(n))."""
        if self.at_chance:
            return ("every variant compared is at chance: more samples of this setting would not show the effect; it "
                    "needs a setting (model, training, task) that lifts them above chance")
        value, low, high, threshold, smallest = self._signed()
        if math.isnan(value):
            return f"a run that measures it ({self.effect.method})"
        if not math.isfinite(self.effect.half_width):
            return f"more {self.effect.unit} ({self.effect.method})"
        # either side decides: the claimed side (low above the threshold) or the other (high below the threshold or
        # below the smallest effect meant); each side's distance shrinks as 1 / sqrt(n)
        ratios = []
        if value > threshold:
            ratios.append((value - low) / (value - threshold))
        if value < threshold:
            ratios.append((high - value) / (threshold - value))
        if smallest is not None and value < smallest:
            ratios.append((high - value) / (smallest - value))
        if not ratios:
            return "the observed effect sits on the threshold: no sample size decides it at this effect"
        n = self.effect.n
        need = max(math.ceil(n * min(ratios) ** 2), n + 1)
        return f"about {need} {self.effect.unit} at the observed effect ({n} here)"

    def text(self) -> str:
        side = ">" if self.direction == "above" else "<"
        claim = f"{side} {self.threshold:g}" + (f" (claim means {side}= {self.smallest:g})"
                                                if self.smallest is not None else "")
        chance = "; every variant at chance" if self.at_chance else ""
        return f"{self.name}: {self.effect.text()} vs {claim}: {self.status}{chance}"

    def record(self) -> dict:
        """The JSON form kept in a result file."""
        return {"name": self.name, "effect": asdict(self.effect), "threshold": self.threshold,
                "direction": self.direction, "smallest": self.smallest, "at_chance": self.at_chance,
                "status": self.status, "to_decide": self.to_decide, "text": self.text()}


def _finite_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def rebuilt(checks) -> list[Check]:
    """Fresh copies of ``checks`` (any iterable), each status computed again from its fields: what an experiment
    hands the runner is never taken at its word. ValueError for anything that is not a plain :class:`Check`
    (a subclass could compute its own status), for no checks, and for two checks with one name."""
    out = []
    for c in list(checks):
        if type(c) is not Check:
            raise ValueError(f"a check must be a tenfold.report.verdict.Check (got {type(c).__name__})")
        out.append(Check(c.name, c.effect, c.threshold, c.direction, c.smallest, c.at_chance))
    if not out:
        raise ValueError("a verdict needs at least one check with an interval")
    names = [c.name for c in out]
    if len(set(names)) != len(names):
        raise ValueError(f"two checks share the name {next(n for n in names if names.count(n) > 1)!r}")
    return out


def decide(checks: Sequence[Check]) -> str:
    """The verdict from the checks by :data:`RULE`; ValueError for no checks (a verdict needs an interval)."""
    if not checks:
        raise ValueError("a verdict needs at least one check with an interval")
    statuses = [c.status for c in checks]
    if all(s == "shown" for s in statuses):
        return "reproduced"
    if "shown" in statuses or "smaller than claimed" in statuses:
        return "partly"
    if "contradicted" in statuses:
        return "not reproduced"
    return "inconclusive"


def from_record(record: dict) -> Check:
    """A :class:`Check` back from :meth:`Check.record` (the report re-applies the rule to stored results)."""
    unbounded = {"high": math.inf, "low": -math.inf, "value": math.nan}  # how JSON stored them: null
    effect = {k: unbounded[k] if v is None and k in unbounded else v for k, v in record["effect"].items()}
    return Check(record["name"], Estimate(**effect), record["threshold"], record["direction"], record["smallest"],
                 record["at_chance"])
