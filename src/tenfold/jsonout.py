"""What every ``--json`` prints: snake_case keys and rounded floats, one convention for all verbs.

Results keep their own keys in the experiments' result files (the report reads those); only the CLI's printed JSON
goes through :func:`tidy`: keys such as ``"recall (held-out test)"`` or ``"image->text@1"`` become
``recall_held_out_test`` and ``image_to_text_at_1``, and float32 noise such as 0.05000000074505806 becomes 0.05
(floats keep ``DIGITS`` significant digits, never fewer than their integer digits).
"""
from __future__ import annotations

import json
import math
import re

DIGITS = 6
_WORDS = [("->", " to "), ("<-", " from "), ("@", " at "), ("+", " plus "), ("%", " percent "), ("#", " number ")]


def snake(key) -> str:
    """``key`` (any JSON key) as snake_case: lower case, words joined by ``_``, only ``[a-z0-9_]``."""
    text = str(key)
    for old, new in _WORDS:
        text = text.replace(old, new)
    text = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", text)  # camelCase -> camel_Case
    text = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")
    return text or "_"


def round_float(x: float, digits: int = DIGITS) -> float:
    """``x`` with ``digits`` significant digits (integer digits are never rounded away); nan/inf unchanged."""
    if not math.isfinite(x) or x == 0:
        return x
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return round(x, decimals)


def tidy(value, digits: int = DIGITS):
    """``value`` with every dict key in snake_case and every float rounded, recursively (lists, tuples, dicts).

    Two keys of one dict that become the same snake_case key are kept apart with a suffix (``_2``, ``_3``, ...).
    """
    if isinstance(value, dict):
        out: dict = {}
        for key, item in value.items():
            name, n = snake(key), 1
            while name in out:
                n += 1
                name = f"{snake(key)}_{n}"
            out[name] = tidy(item, digits)
        return out
    if isinstance(value, (list, tuple)):
        return [tidy(item, digits) for item in value]
    if isinstance(value, bool) or not isinstance(value, float):
        if type(value).__module__ == "numpy":  # numpy scalars: as Python numbers
            return tidy(value.item(), digits)
        return value
    return round_float(value, digits)


def dumps(value, **kwargs) -> str:
    """``json.dumps`` of :func:`tidy` (``value``)."""
    return json.dumps(tidy(value), **kwargs)


def print_json(value, **kwargs) -> None:
    """Print ``value`` as the CLI's ``--json`` output (see :func:`tidy`)."""
    print(dumps(value, **kwargs), flush=True)
