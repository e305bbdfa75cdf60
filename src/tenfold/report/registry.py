"""The experiment registry: each paper package registers its reproductions with ``@experiment``.

An experiment is a function ``fn(run: Run) -> dict`` returning ``ours`` (measured numbers), ``checks`` (one
:class:`~tenfold.report.verdict.Check` per part of the paper's claim, each an estimate with its interval) and ``why``
(one line); the runner turns the checks into the verdict by one rule (:func:`tenfold.report.verdict.decide`). It
records its settings in ``run.settings`` and its plots with ``run.save_plot``.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

from tenfold.errors import TenfoldError
from tenfold.packages import modules
from tenfold.report.papers import BY_KEY
from tenfold.report.verdict import VERDICTS

__all__ = ["PROFILES", "VERDICTS", "Experiment", "Run", "experiment", "load_all", "select"]

PROFILES = ("smoke", "quick", "full")
# Modules whose import registers experiments: each paper package's (tenfold.packages lists them).
EXPERIMENT_MODULES: list[str] = modules("experiment")


@dataclass
class Experiment:
    name: str
    paper: str
    claim: str
    paper_numbers: dict
    fn: Callable
    order: int = 0


@dataclass
class Run:
    """What an experiment gets: its profile, where to write, and places to record settings/plots."""

    profile: str
    out_dir: str
    name: str
    settings: dict = field(default_factory=dict)
    plots: list = field(default_factory=list)
    progress: Callable[[str], None] = lambda message: None

    def save_plot(self, fig, stem: str) -> str:
        """Save a matplotlib figure as ``DIR/results/<experiment>-<stem>.png`` and close it."""
        import os

        import matplotlib.pyplot as plt

        fname = f"{self.name}-{stem}.png"
        fig.savefig(os.path.join(self.out_dir, "results", fname), dpi=110, bbox_inches="tight")
        plt.close(fig)
        self.plots.append(fname)
        return fname

    scaled_down: list = field(default_factory=list)  # what the quick profile runs smaller than the full one

    def pick(self, smoke, quick, full, shrunk: str | None = None):
        """The value for this run's profile.

        ``shrunk`` names the setting where the quick profile is cut below the full profile's size only to fit the
        main job in one sitting (about 30 minutes on 2 cores): a quick run records "``shrunk``: quick (full profile:
        full)" in :attr:`scaled_down`, which the report prints beside the verdict."""
        if shrunk and self.profile == "quick" and quick != full:
            self.scaled_down.append(f"{shrunk}: {_plain(quick)} (full profile: {_plain(full)})")
        return {"smoke": smoke, "quick": quick, "full": full}[self.profile]


def _plain(value) -> str:
    """A setting as a reader would write it (lists without brackets' noise, tuples as a x b)."""
    if isinstance(value, (list, tuple)) and all(isinstance(v, (int, float, str)) for v in value):
        return ", ".join(map(str, value)) if isinstance(value, list) else " x ".join(map(str, value))
    return str(value)


REGISTRY: dict[str, Experiment] = {}


def experiment(name: str, paper: str, claim: str, paper_numbers: dict):
    """Register ``fn`` as experiment ``name`` reproducing ``claim`` of paper key ``paper``."""
    if paper not in BY_KEY:
        raise ValueError(f"unknown paper key {paper!r}")

    def wrap(fn):
        REGISTRY[name] = Experiment(name, paper, claim, paper_numbers, fn, order=len(REGISTRY))
        return fn

    return wrap


def load_all() -> dict[str, Experiment]:
    """Import every experiment module (registering its experiments) and return the registry."""
    for module in EXPERIMENT_MODULES:
        importlib.import_module(module)
    return REGISTRY


def select(names: list[str] | None) -> list[Experiment]:
    registry = load_all()
    if not names:
        return sorted(registry.values(), key=lambda e: e.order)
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise TenfoldError(f"unknown experiment {unknown[0]!r}; known: {', '.join(sorted(registry)) or 'none'}")
    return [registry[n] for n in dict.fromkeys(names)]  # a name given twice runs once
