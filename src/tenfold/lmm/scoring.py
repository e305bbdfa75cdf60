"""Scoring a model's free-text answer against a probe's expected answer (the harness's rules, one per sample).

``exact``: the answer, after normalising (case, punctuation, number words -> digits), is the whole response or its
first words; ``contains``: the answer appears as whole words; ``all_of``: every listed item does; ``numeric``: the
first number in the response is within ``tolerance``; ``choice``: of the ``choices``, the one named first is the
answer; ``judge``: a callable asks a judge model (see :func:`judge_prompt`) - the paper's sole scorer was a human,
the judge is the automatic stand-in.
"""
from __future__ import annotations

import re

from tenfold.errors import TenfoldError

NUMBER_WORDS = {"zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                "nine": 9, "ten": 10, "eleven": 11, "twelve": 12}


def words(text: str) -> list[str]:
    """Lower-case words and numbers (number words become digits); punctuation dropped."""
    out = []
    for w in re.findall(r"[a-z]+|-?\d+(?:\.\d+)?", str(text).lower()):
        out.append(str(NUMBER_WORDS[w]) if w in NUMBER_WORDS else w)
    return out


def _has(haystack: list[str], needle: list[str]) -> int:
    """Index of ``needle`` as a run of whole words in ``haystack``, or -1."""
    n = len(needle)
    for i in range(len(haystack) - n + 1) if n else ():
        if haystack[i:i + n] == needle:
            return i
    return -1


def first_number(text: str) -> float | None:
    for w in words(text):
        try:
            return float(w)
        except ValueError:
            continue
    return None


def judge_prompt(question: str, reference: str, response: str) -> list[dict]:
    """The messages a judge model gets: does the response give the reference answer? (yes / no)."""
    return [{"role": "system", "content": "You grade answers. Reply with one word: yes or no."},
            {"role": "user", "content": f"Question: {question}\nReference answer: {reference}\n"
                                        f"Response: {response}\nDoes the response give the reference answer?"}]


def score(sample, response: str, judge=None) -> bool:
    """Whether ``response`` answers ``sample`` (a :class:`~tenfold.lmm.suite.Sample`) correctly."""
    got = words(response)
    rule = sample.scoring
    if rule == "numeric":
        value = first_number(response)
        return value is not None and abs(value - float(sample.answer)) <= sample.tolerance
    if rule == "all_of":
        return all(_has(got, words(item)) >= 0 for item in sample.answer)
    want = words(sample.answer)
    if rule == "exact":
        return bool(want) and got[:len(want)] == want
    if rule == "contains":
        return bool(want) and _has(got, want) >= 0
    if rule == "choice":
        found = [(_has(got, words(c)), c) for c in sample.choices]
        found = [(i, c) for i, c in found if i >= 0]
        return bool(found) and min(found)[1] == str(sample.answer)
    if rule == "judge":
        if judge is None:
            raise TenfoldError(f"sample {sample.id!r} is scored by a judge model: give one (--judge-model / judge=)")
        verdict = words(judge(judge_prompt(sample.prompt, str(sample.answer), response)))
        return bool(verdict) and verdict[0] == "yes"
    raise TenfoldError(f"unknown scoring rule {rule!r}")
