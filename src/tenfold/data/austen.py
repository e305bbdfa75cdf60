"""Jane Austen's six novels, from Debian's ``r-cran-janeaustenr`` package.

The package is fetched with ``apt-get download`` (no root needed), unpacked in Python (a
.deb is an ``ar`` archive holding ``data.tar.*``), and its lazy-load database
``data/Rdata.rdb`` is parsed with :mod:`tenfold.data.rdata`. The books are cached as UTF-8
text under ``$TENFOLD_HOME/data/austen``. The texts are public domain; the R package is MIT.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tenfold import home
from tenfold.data.debian import apt_download, deb_files
from tenfold.data.rdata import read_lazyload_db
from tenfold.errors import TenfoldError
from tenfold.provenance import note_input

DEBIAN_PACKAGE = "r-cran-janeaustenr"
SYSTEM_COPY = Path("/usr/lib/R/site-library/janeaustenr/data/Rdata.rdx")
# Publication order, as janeaustenr's austen_books() gives them.
BOOKS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
TITLES = {
    "sensesensibility": "Sense and Sensibility",
    "prideprejudice": "Pride and Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
NO_APT_HINT = "use your own text instead with --text PATH"


def cache_dir() -> Path:
    return Path(home()) / "data" / "austen"


def book_key(name: str) -> str:
    """Normalise a user's book name ('Pride and Prejudice', 'pride-prejudice', 'emma')."""
    key = "".join(ch for ch in name.lower() if ch.isalnum()).replace("and", "")
    if key in BOOKS:
        return key
    raise TenfoldError(f"unknown Austen novel {name!r}; choose one of: {', '.join(BOOKS)}")


def _apt_download(workdir: str) -> Path:
    return apt_download(DEBIAN_PACKAGE, workdir, NO_APT_HINT)


def unpack_rdata(deb_path: Path, dest: Path) -> Path:
    """Extract ``data/Rdata.rdx`` and ``.rdb`` from the .deb into ``dest``; return the .rdx path."""
    files = deb_files(deb_path, lambda name: name.endswith(("data/Rdata.rdx", "data/Rdata.rdb")))
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (dest / Path(name).name).write_bytes(data)
    rdx = dest / "Rdata.rdx"
    if not rdx.exists():
        raise TenfoldError(f"{deb_path} holds no data/Rdata.rdx")
    return rdx


def _lines_to_text(lines: list) -> str:
    return "\n".join(line or "" for line in lines).strip() + "\n"


def prepare(progress=None) -> Path:
    """Make sure the six novels are cached as text; return the cache directory."""
    out = cache_dir()
    if all((out / f"{b}.txt").exists() for b in BOOKS):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        rdx = SYSTEM_COPY if SYSTEM_COPY.exists() else unpack_rdata(_apt_download(tmp), Path(tmp) / "rdata")
        objects = read_lazyload_db(rdx)
        missing = [b for b in BOOKS if b not in objects]
        if missing:
            raise TenfoldError(f"{DEBIAN_PACKAGE} lacks {', '.join(missing)}")
        out.mkdir(parents=True, exist_ok=True)
        for book in BOOKS:
            tmp_file = out / f".{book}.txt.{os.getpid()}"
            tmp_file.write_text(_lines_to_text(objects[book]), encoding="utf-8")
            tmp_file.replace(out / f"{book}.txt")  # atomic: a crash never leaves half a book
    return out


def austen(book: str | None = None) -> str:
    """Text of one novel (``book`` like 'emma' or 'Pride and Prejudice'), or all six joined in publication order."""
    books = BOOKS if book is None else (book_key(book),)
    directory = prepare()
    for b in books:
        note_input(directory / f"{b}.txt")  # the report's provenance; a changed file re-runs what read it
    return "\n\n".join((directory / f"{b}.txt").read_text(encoding="utf-8") for b in books)
