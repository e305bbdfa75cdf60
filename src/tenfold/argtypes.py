"""Argument types and checks shared by the verbs: a bad value is one line from argparse, before any work starts.

Kept free of heavy imports: every verb's parser is built from these at start-up.
"""
from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from tenfold.errors import TenfoldError


def _number(text: str, kind):
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def positive_int(text: str) -> int:
    """An integer >= 1 (token budgets, counts, steps)."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more (got {value})")
    return value


SEED_MAX = 2**32 - 1  # numpy's legacy seeding (np.random.seed, gymnasium, sklearn) takes no more


def _int_between(text: str, low: int, high: int, unit: str = "") -> int:
    value = _number(text, int)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be between {low} and {high}{unit} (got {value})")
    return value


def random_seed(text: str) -> int:
    """A random seed: an integer in [0, 2**32 - 1], the range every generator tenfold seeds accepts (torch alone takes
    negative ones; numpy refuses them, and torch overflows past 2**64)."""
    return _int_between(text, 0, SEED_MAX)


def positive_float(text: str) -> float:
    """A finite number > 0 (time-outs, rates)."""
    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0 (got {value:g})")
    return value


IMAGE_SIZE_MAX = 4096  # one RGB image of this side is 48 MiB; a typo such as 100000 would ask for 28 GiB


def image_size(text: str) -> int:
    """An image side in pixels: 32 (the smallest the visual world renders) to 4096."""
    return _int_between(text, 32, IMAGE_SIZE_MAX, " pixels")


def temperature(text: str) -> float:
    """A sampling temperature: 0 (greedy) or more."""
    value = _number(text, float)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 (greedy) or more (got {value:g})")
    return value


def probability(text: str) -> float:
    """A nucleus (top-p) mass: more than 0, at most 1."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1] (got {value:g})")
    return value


def unit_interval(text: str) -> float:
    """A share in [0, 1] (min-p: 0 = off)."""
    value = _number(text, float)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1] (got {value:g})")
    return value


def penalty_factor(text: str) -> float:
    """A multiplicative repetition penalty in [0.1, 10] (1 = off; the range of ``tenfold.models.sampling``)."""
    value = _number(text, float)
    if not 0.1 <= value <= 10:
        raise argparse.ArgumentTypeError(f"must be in [0.1, 10]; 1 is off (got {value:g})")
    return value


class StoreGiven(argparse.Action):
    """Store the value like argparse's default action, and remember that the option was given on the command line
    (``args.given``): ``--resume`` uses it to tell a new limit from an option left at its default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        setattr(namespace, "given", frozenset(getattr(namespace, "given", None) or ()) | {self.dest})


CHECKPOINT_EVERY_HELP = ("steps between resumable checkpoints (0 = none along the way: only --stop-after's and the "
                         "final model)")


def add_training_args(parser, *, checkpoint_every_default: int, checkpoint_every_type=non_negative_int,
                      checkpoint_every_help: str | None = CHECKPOINT_EVERY_HELP,
                      checkpoint_every_action: str | type[argparse.Action] = "store", resume_help: str | None = None,
                      stop_after: bool = True) -> None:
    """Add a resumable training run's flags to a verb's parser, in this order:

    - ``--checkpoint-every N`` (``args.checkpoint_every``): ``checkpoint_every_default``, parsed by
      ``checkpoint_every_type`` (steps, or a verb's own unit such as generations), stored by
      ``checkpoint_every_action`` (e.g. :class:`StoreGiven`, where ``--resume`` must tell a value given anew);
    - ``--resume`` (``args.resume``, a switch) with ``resume_help``;
    - with ``stop_after``, ``--stop-after STEP`` (``args.stop_after``, an integer >= 1, default None): stop after
      that step with a checkpoint; the loop (:func:`tenfold.models.finetune.train_steps`) raises ``TrainingStopped``.

    A help of None shows the flag without one. Bad values are argparse's one-line errors at parse time.
    """
    parser.add_argument("--checkpoint-every", type=checkpoint_every_type, default=checkpoint_every_default,
                        action=checkpoint_every_action, help=checkpoint_every_help)
    parser.add_argument("--resume", action="store_true", help=resume_help)
    if stop_after:
        parser.add_argument("--stop-after", type=positive_int, default=None, metavar="STEP",
                            help="stop after this step with a checkpoint (e.g. a job's time limit); continue with "
                                 "--resume")


def out_dir(path: str | Path, what: str | None = "--out") -> Path:
    """A directory to write into: refused in one line (before any work starts) when it is empty, names an existing
    file, or lies under a file or a folder this user cannot write to (where ``mkdir`` would fail later)."""
    if str(path).strip() == "":
        raise TenfoldError(f"{what or 'the path'} is empty; give a directory")
    path = Path(path)
    name = f"{what} {path}" if what else str(path)
    if path.exists() and not path.is_dir():
        raise TenfoldError(f"{name} is an existing file; give a directory")
    parent = path.absolute()
    while not parent.exists():
        parent = parent.parent
    if parent != path.absolute():
        if not parent.is_dir():
            raise TenfoldError(f"{name}: {parent} is a file, not a directory")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise TenfoldError(f"{name}: cannot create it, {parent} is not writable")
    return path


def directory(text: str) -> str:
    """``--out`` naming a folder, checked by :func:`out_dir` at parse time: a bad one is one line before any import
    or work (the value stays a string, as the verbs expect)."""
    try:
        out_dir(text, what=None)  # argparse names the option
    except TenfoldError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


PLOT_SUFFIXES = (".png", ".pdf", ".svg", ".jpg", ".jpeg")


def plot_file(text: str) -> str:
    """``--plot FILE``: a figure file matplotlib writes by its suffix (.png, .pdf, .svg, .jpg), checked at parse time
    so a typo is one line before the work, not an error after it. An existing file is overwritten; missing parent
    folders are created by the verb."""
    if text.strip() == "":
        raise argparse.ArgumentTypeError("is empty; give a file name such as plot.png")
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name such as {path / 'plot.png'}")
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: give a file ending in {', '.join(PLOT_SUFFIXES)}")
    try:
        out_dir(path.parent, what=None)
    except TenfoldError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def device_name(text: str) -> str:
    """``--device``: auto, cpu, cuda or cuda:N (checked here at parse time; whether torch sees that GPU is checked
    when the verb resolves it, :func:`tenfold.devices.resolve_device`)."""
    from tenfold.devices import check_device_name

    try:
        return check_device_name(text)
    except TenfoldError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


DEVICE_HELP = ("where the model runs: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N; models "
               "load in bfloat16 on a GPU and in the CPU's usual dtype otherwise")


def add_device_arg(parser, help: str = DEVICE_HELP) -> None:
    """Add ``--device`` to a verb that runs a model. Its default (None) is ``$TENFOLD_DEVICE`` when set, else auto
    (tenfold.devices): ``tenfold reproduce --device`` sets the variable, so the verbs it starts as subprocesses
    (``tenfold serve`` in serve-load) run where it runs."""
    if any("--dtype" in a.option_strings for a in parser._actions):
        help = help.replace(" otherwise", " otherwise, unless --dtype is given", 1)
    parser.add_argument("--device", type=device_name, default=None,
                        help=help + "; default: $TENFOLD_DEVICE when set, else auto")
