"""Corpora and data sets: how each is obtained, parsed, cached and validated."""
from tenfold.data.austen import BOOKS, TITLES, austen, book_key
from tenfold.data.austen import prepare as prepare_austen
from tenfold.data.text import read_text

__all__ = ["BOOKS", "TITLES", "austen", "book_key", "prepare_all", "prepare_austen", "read_text"]


def prepare_all() -> dict[str, str]:
    """Fetch and cache every corpus tenfold uses; returns {corpus: where it is cached}."""
    from tenfold.data.calendar import prepare as prepare_calendar
    from tenfold.data.chinese import prepare as prepare_chinese

    return {"austen": str(prepare_austen()), "calendar": str(prepare_calendar()),
            "fortunes-zh": str(prepare_chinese())}
