"""Where a model runs: the one place that turns ``--device`` / ``device=`` into a ``torch.device``.

``auto`` is the first GPU when torch sees one (``torch.cuda.is_available()``), else the CPU; ``cpu``; ``cuda`` or
``cuda:N``. Every loader and every verb that runs a model resolves its device here, and every tensor made for a
model is made on that model's device (``next(model.parameters()).device``), never on a device written in the code:
``tests/test_devices.py`` checks ``src/`` for device literals outside this module.

A loader given no device (None) uses ``$TENFOLD_DEVICE`` when set (``tenfold reproduce --device`` sets it for the
experiments it runs), else auto.

dtype defaults per device (:func:`default_dtype`): bfloat16 on GPUs (the precision models are trained and served in
there), float32 on the CPU (the CPU default of every loader here; CPU half precision is opt-in, e.g. ``--dtype``).
"""
from __future__ import annotations

import os
import re

from tenfold.errors import TenfoldError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
CPU = "cpu"
_CUDA = "cuda"
# N: what torch.device parses (ASCII digits, no leading zero, not beyond any machine's GPU count)
_PATTERN = re.compile(r"^(auto|cpu|cuda(:(0|[1-9][0-9]{0,3}))?)$")


class DeviceError(TenfoldError, ValueError):
    """A device name that is not auto/cpu/cuda[:N], or a GPU torch does not see: a ValueError for library callers
    (``load_lm(device="tpu")``), one line with a non-zero exit in the CLI (a TenfoldError)."""


def check_device_name(name: str, source: str = "") -> str:
    """``name`` lower-cased if it is auto, cpu, cuda or cuda:N; DeviceError (a ValueError) otherwise (no torch import).
    ``source``: where the name came from, for the message (e.g. "TENFOLD_DEVICE")."""
    text = str(name).strip().lower()
    if not _PATTERN.match(text):
        where = f"{source}: " if source else ""
        raise DeviceError(f"{where}unknown device {name!r}; choose {DEVICE_CHOICES}")
    return text


def _named(name) -> str:
    """``name`` checked, or for None ``$TENFOLD_DEVICE`` checked (naming the variable when it is wrong), else auto."""
    if name is not None:
        return check_device_name(name)
    env = os.environ.get("TENFOLD_DEVICE")
    return check_device_name(env, "TENFOLD_DEVICE") if env else "auto"


def resolve_device(name=None):
    """A ``torch.device`` for ``name`` (None or "auto": a GPU when torch sees one, else the CPU; a ``torch.device``
    passes through after the same check). Raises DeviceError (a TenfoldError and a ValueError) for an unknown name,
    for ``cuda`` when torch sees no GPU (a CPU-only build, or no driver), and for ``cuda:N`` beyond the GPUs it sees."""
    import torch

    if isinstance(name, torch.device):
        name = str(name)
    text = _named(name)
    available = torch.cuda.is_available()
    if text == "auto":
        return torch.device(_CUDA if available else CPU)
    device = torch.device(text)
    if device.type == _CUDA:
        if not available:
            raise DeviceError(f"--device {text}: torch sees no CUDA GPU here (torch {torch.__version__}, "
                               f"CUDA build: {torch.version.cuda or 'no'}); use --device cpu or auto")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"--device {text}: torch sees {count} GPU(s), numbered 0..{count - 1}")
    return device


def device_type(name=None) -> str:
    """"cpu" or "cuda" for ``name`` without asking whether that GPU exists (auto/None: what :func:`resolve_device`
    picks here)."""
    text = _named(None if name is None else str(name))
    return resolve_device(text).type if text == "auto" else text.split(":")[0]


def default_dtype(device):
    """The dtype a loader uses on ``device`` when none is given: bfloat16 on a GPU, float32 on the CPU."""
    import torch

    return torch.bfloat16 if device_type(device) == _CUDA else torch.float32


def model_device(model):
    """The device of ``model``'s first parameter (where its inputs must go); the CPU for a model without any."""
    import torch

    for p in model.parameters():
        return p.device
    return torch.device(CPU)
