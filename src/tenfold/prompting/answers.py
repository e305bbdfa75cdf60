"""Reading the final answer out of a model's reasoning (for Yasunaga et al.'s math evaluation, Sec. 4).

Looks, in order, for ``\\boxed{...}`` (the last one, nested braces allowed), a GSM8K-style
``#### answer`` line, a stated final answer ("the answer is ...", "final answer: ..."), and
finally the last number in the text. Numbers are compared as numbers (``1,000`` = ``1000.0``;
a currency sign, a trailing period or a percent sign do not matter).
"""
from __future__ import annotations

import re

_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
_STATED = re.compile(r"(?:final answer|the answer)\s*(?:is|:|=)?\s*:?\s*([^\n]+)", re.I)


def _boxed(text: str) -> str | None:
    at = text.rfind("\\boxed{")
    if at < 0:
        return None
    depth, start = 0, at + len("\\boxed{")
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            if depth == 0:
                return text[start:i]
            depth -= 1
    return None


def extract_answer(text: str) -> str | None:
    """The final answer stated in ``text`` (a string as written), or None."""
    if not text:
        return None
    boxed = _boxed(text)
    if boxed is not None and boxed.strip():
        return boxed.strip()
    hashes = re.findall(r"####\s*([^\n]+)", text)
    if hashes:
        return hashes[-1].strip()
    stated = _STATED.findall(text)
    if stated:
        number = _NUMBER.search(stated[-1])
        return number.group(0) if number else stated[-1].strip().rstrip(".")
    numbers = _NUMBER.findall(text)
    return numbers[-1] if numbers else None


def to_number(answer: str | None) -> float | None:
    if answer is None:
        return None
    cleaned = answer.replace("\\$", "").replace("$", "").replace("€", "").replace("£", "").replace("%", "")
    cleaned = re.sub(r"\\(text|mathrm)\{[^}]*\}", "", cleaned)
    match = _NUMBER.search(cleaned)
    if not match:
        return None
    try:
        return float(match.group(0).replace(",", ""))
    except ValueError:
        return None


def is_correct(text: str, gold) -> bool:
    """Whether the answer extracted from ``text`` equals ``gold`` (numerically when both are numbers)."""
    answer = extract_answer(text)
    got, want = to_number(answer), to_number(str(gold))
    if got is not None and want is not None:
        return abs(got - want) <= 1e-6 * max(1.0, abs(want))
    return answer is not None and answer.strip().lower() == str(gold).strip().lower()
