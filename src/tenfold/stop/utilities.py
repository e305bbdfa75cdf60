"""STOP's downstream tasks (Zelikman et al. 2023, Sec. 5 and Appendix): utilities that score a program.

A program is Python source defining ``algorithm(...)``; it runs in :mod:`tenfold.sandbox`,
called once per random instance with plain data, and the utility scores its answers here, on
data it never saw (test samples, hidden secrets). Every utility is in [0, 1] and averages several
instances drawn from a seed, so two programs compared on the same seed meet the same instances.
``DESCRIPTION`` is what a language model is shown: the interface and how it is scored.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.sandbox import Limits, SandboxResult, circumvention_signals, run_program


@dataclass
class UtilityResult:
    utility: float
    status: str
    message: str = ""
    violations: list = field(default_factory=list)
    signals: list = field(default_factory=list)  # static circumvention signs in the program's text
    seconds: float = 0.0
    isolation: str = ""  # what the sandbox ran under: namespaces(+seccomp) or guard
    denied: dict = field(default_factory=dict)  # what the program tried and was denied, by kind (run time)


class Utility:
    name = ""
    description = ""
    entry = "algorithm"
    instances = 5
    per_call_seconds = 1.0  # a call slower than this scores 0 (measured inside the sandbox)
    limits = Limits(wall_seconds=20.0, cpu_seconds=20)

    def make(self, rng: np.random.Generator) -> tuple[list, object]:
        """One instance: (the arguments the program gets, the hidden data to score its answer)."""
        raise NotImplementedError

    def score(self, answer, hidden) -> float:
        raise NotImplementedError

    def __call__(self, source: str, seed: int = 0, isolation: str | None = None) -> UtilityResult:
        """Score ``source`` on instances drawn from ``seed``; ``isolation`` as in :func:`tenfold.sandbox.run_program`.

        Raises :class:`tenfold.sandbox.IsolationRequired` only when namespaces are required and unavailable.
        """
        rng = np.random.default_rng(seed)
        made = [self.make(rng) for _ in range(self.instances)]
        run: SandboxResult = run_program(source, self.entry, [args for args, _ in made], self.limits,
                                         isolation=isolation)
        signals = circumvention_signals(source)
        if run.status != "ok":
            return UtilityResult(0.0, run.status, run.message, run.violations, signals, run.wall_seconds,
                                 run.isolation, run.denied())
        total = 0.0
        for (_, hidden), answer, took in zip(made, run.outputs, run.seconds):
            if took > self.per_call_seconds:
                continue
            try:
                score = float(self.score(answer, hidden))
            except (TypeError, ValueError, IndexError, KeyError, AttributeError, ArithmeticError, RecursionError):
                continue  # a malformed answer scores 0 (an int too large for int64 overflows, ...)
            total += score if math.isfinite(score) else 0.0
        return UtilityResult(total / self.instances, "ok", run.message, [], signals, run.wall_seconds, run.isolation,
                             run.denied())


class ParityNoise(Utility):
    name = "lpn"
    bits, noise, n_train, n_test = 10, 0.05, 100, 20
    description = f"""Learning parity with noise. There is a hidden secret: a list of {bits} bits (0/1).
Define `algorithm(train_samples, train_labels)`. `train_samples` is a list of {n_train} lists of {bits} ints (0/1),
`train_labels` a list of {n_train} ints (0/1): the parity (sum mod 2) of the sample's bits where the secret is 1,
each label flipped with probability {noise}. Return the estimated secret as a list of {bits} ints (0/1).
Utility: the accuracy of the returned secret's parities on {n_test} fresh noiseless test samples, averaged over
5 random instances (brute force over all 1024 secrets scores about 1.0; random guessing about 0.5).
Each call must finish within 1 second."""

    def make(self, rng):
        secret = rng.binomial(1, 0.3, self.bits)
        samples = rng.integers(0, 2, (self.n_train + self.n_test, self.bits))
        parity = (samples @ secret) % 2
        labels = (parity[: self.n_train] + rng.binomial(1, self.noise, self.n_train)) % 2
        return [samples[: self.n_train].tolist(), labels.tolist()], (samples[self.n_train :], parity[self.n_train :])

    def score(self, answer, hidden):
        tests, parity = hidden
        guess = np.asarray(answer, dtype=np.int64).reshape(-1)
        if guess.shape != (self.bits,) or not np.isin(guess, (0, 1)).all():
            return 0.0
        return float(np.mean((tests @ guess) % 2 == parity))


class Parity(ParityNoise):
    name = "parity"
    noise = 0.0
    description = ParityNoise.description.replace("Learning parity with noise", "Learning parity without noise").replace(
        f",\neach label flipped with probability {ParityNoise.noise}", "")
    assert "flipped" not in description  # the noiseless task must not describe noise


class ThreeSat(Utility):
    name = "3sat"
    n_vars, n_clauses = 30, 120
    description = f"""Random 3-SAT. Define `algorithm(formula, n)`. `formula` is a list of {n_clauses} clauses over
variables 1..n (n = {n_vars}); each clause is a list of 3 non-zero ints, a positive int i meaning variable i is true
and -i meaning it is false; a clause holds when any of its literals does. Every formula is satisfiable.
Return an assignment: a list of n+1 values whose item i (1..n) is true/false (item 0 is ignored).
Utility: the fraction of 5 random formulas the assignment satisfies completely; each call must finish within
1 second."""

    def make(self, rng):
        truth = rng.integers(0, 2, self.n_vars + 1).astype(bool)
        formula = []
        while len(formula) < self.n_clauses:
            variables = rng.choice(np.arange(1, self.n_vars + 1), 3, replace=False)
            clause = [int(v) if rng.random() < 0.5 else -int(v) for v in variables]
            if any(truth[abs(lit)] == (lit > 0) for lit in clause):
                formula.append(clause)
        return [formula, self.n_vars], formula

    def score(self, answer, formula):
        values = list(answer)
        if len(values) != self.n_vars + 1:
            return 0.0
        return float(all(any(bool(values[abs(lit)]) == (lit > 0) for lit in clause) for clause in formula))


class MaxCut(Utility):
    name = "maxcut"
    n_nodes, p_edge, max_weight = 40, 0.4, 10
    description = f"""Max-Cut. Define `algorithm(weights)`. `weights` is a symmetric {n_nodes}x{n_nodes} matrix (list
of lists of ints, 0 = no edge, otherwise 1..{max_weight}) of a random graph. Return a partition: a list of
{n_nodes} ints, each 0 or 1, using both values. Utility: the weight of the edges cut (ends on different sides)
divided by the total edge weight, averaged over 5 random graphs (a random partition scores about 0.5);
each call must finish within 1 second."""

    def make(self, rng):
        n = self.n_nodes
        upper = np.triu((rng.random((n, n)) < self.p_edge) * rng.integers(1, self.max_weight + 1, (n, n)), 1)
        weights = upper + upper.T
        return [weights.tolist()], weights

    def score(self, answer, weights):
        side = np.asarray(answer, dtype=np.int64).reshape(-1)
        if side.shape != (self.n_nodes,) or set(side.tolist()) != {0, 1}:
            return 0.0
        cut = weights[side[:, None] != side[None, :]].sum() / 2
        return float(cut / (weights.sum() / 2))


def grid_distance(s: str, t: str) -> int:
    """Differences between s and t, plus the changes of letter along s and along t."""
    return (sum(a != b for a, b in zip(s, t)) + sum(a != b for a, b in zip(s, s[1:]))
            + sum(a != b for a, b in zip(t, t[1:])))


class StringGrid(Utility):
    name = "strgrid"
    instances = 10
    description = """String grid distance. For two strings s, t of equal length over the letters A and B, the distance
is: the number of positions where they differ + the number of adjacent positions where s changes letter + the
number where t changes letter. Define `algorithm(t, dist)`: return a string s over A/B with len(s) == len(t) and
distance(s, t) == dist (such an s exists). Utility: 1 for an exact distance, otherwise between 0 and 0.5 the
closer it is, averaged over 10 random cases of length 1..30; each call must finish within 1 second."""

    def make(self, rng):
        length = int(rng.integers(1, 31))
        t = "".join(rng.choice(["A", "B"], length))
        s = "".join(rng.choice(["A", "B"], length))
        return [t, grid_distance(s, t)], (t, grid_distance(s, t))

    def score(self, answer, hidden):
        t, dist = hidden
        if not isinstance(answer, str) or len(answer) != len(t) or not set(answer) <= {"A", "B"}:
            return 0.0
        d = grid_distance(answer, t)
        return 1.0 if d == dist else max(0.0, 0.5 - abs(d - dist) / (6 * len(t)))


UTILITIES = {u.name: u for u in (ParityNoise(), Parity(), ThreeSat(), MaxCut(), StringGrid())}


def get_utility(name: str) -> Utility:
    if name not in UTILITIES:
        raise TenfoldError(f"unknown STOP task {name!r}; choose one of: {', '.join(UTILITIES)}")
    return UTILITIES[name]


def seed_program(name: str) -> str:
    """The task's starting program (simple on purpose: the improver's job is to do better)."""
    from pathlib import Path

    get_utility(name)
    stem = {"parity": "lpn"}.get(name, name)  # the same starting program learns parity with or without noise
    return (Path(__file__).with_name("programs") / f"{stem}.py").read_text(encoding="utf-8")
