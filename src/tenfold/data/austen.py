"""Jane Austen's six novels, from Debian's ``r-cran-janeaustenr`` package.

The package is fetched with ``apt-get download`` (no root needed), unpacked in Python (a
.deb is an ``ar`` archive holding ``data.tar.*``), and its lazy-load database
``data/Rdata.rdb`` is parsed with :mod:`tenfold.data.rdata`. The books are cached as UTF-8
text under ``$TENFOLD_HOME/data/austen``. The texts are public domain; the R package is MIT.
"""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from tenfold import home
from tenfold.data.rdata import read_lazyload_db
from tenfold.errors import TenfoldError

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


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _apt_download(workdir: str) -> Path:
    if shutil.which("apt-get") is None:
        raise TenfoldError(f"apt-get is not available, so Debian's {DEBIAN_PACKAGE} cannot be fetched; {NO_APT_HINT}")
    result = _run(["apt-get", "download", DEBIAN_PACKAGE], workdir)
    if result.returncode != 0:
        # A fresh machine may have empty package lists: refresh them once, then retry.
        _run(["apt-get", "update"], workdir)
        result = _run(["apt-get", "download", DEBIAN_PACKAGE], workdir)
    debs = sorted(Path(workdir).glob(f"{DEBIAN_PACKAGE}_*.deb"))
    if result.returncode != 0 or not debs:
        last = (result.stderr or result.stdout).strip().splitlines()
        why = last[-1] if last else f"exit code {result.returncode}"
        raise TenfoldError(f"could not download Debian's {DEBIAN_PACKAGE} ({why}); {NO_APT_HINT}")
    return debs[-1]


def _ar_members(deb: bytes) -> dict[str, bytes]:
    if not deb.startswith(b"!<arch>\n"):
        raise TenfoldError("the downloaded .deb is not an ar archive")
    pos, members = 8, {}
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def unpack_rdata(deb_path: Path, dest: Path) -> Path:
    """Extract ``data/Rdata.rdx`` and ``.rdb`` from the .deb into ``dest``; return the .rdx path."""
    members = _ar_members(Path(deb_path).read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise TenfoldError(f"{deb_path} holds no data.tar member")
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(("data/Rdata.rdx", "data/Rdata.rdb")):
                (dest / Path(member.name).name).write_bytes(tar.extractfile(member).read())
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
            tmp_file.write_text(_lines_to_text(objects[book].value), encoding="utf-8")
            tmp_file.replace(out / f"{book}.txt")  # atomic: a crash never leaves half a book
    return out


def austen(book: str | None = None) -> str:
    """Text of one novel (``book`` like 'emma' or 'Pride and Prejudice'), or all six joined in publication order."""
    books = BOOKS if book is None else (book_key(book),)
    directory = prepare()
    return "\n\n".join((directory / f"{b}.txt").read_text(encoding="utf-8") for b in books)
