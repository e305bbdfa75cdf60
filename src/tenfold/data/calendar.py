"""Dated events and people from Debian's ``calendar`` package (the BSD calendar files).

``calendar.history``, ``calendar.birthday`` and ``calendar.music`` hold lines like
``01/19<TAB>Edgar Allan Poe born in Boston, 1809`` (continuation lines start with a tab).
The package is fetched with ``apt-get download`` and unpacked in Python; the files are cached
as UTF-8 under ``$TENFOLD_HOME/data/calendar``. Licence: BSD (public-domain facts).
"""
from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from tenfold import home
from tenfold.data.debian import apt_download, deb_files
from tenfold.errors import TenfoldError
from tenfold.provenance import note_input

DEBIAN_PACKAGE = "calendar"
FILES = ("history", "birthday", "music")
_DATE = re.compile(r"^(\d\d)/(\d\d)\*?\t(.*)$")


def cache_dir() -> Path:
    return Path(home()) / "data" / "calendar"


def prepare() -> Path:
    out = cache_dir()
    if all((out / f"calendar.{f}").exists() for f in FILES):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        deb = apt_download(DEBIAN_PACKAGE, tmp)
        files = deb_files(deb, lambda name: name.rsplit("/", 1)[-1] in {f"calendar.{f}" for f in FILES})
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = out / Path(name).name
            tmp_file = target.with_name(f".{target.name}.{os.getpid()}")
            tmp_file.write_text(data.decode("utf-8", errors="replace"), encoding="utf-8")
            tmp_file.replace(target)
    missing = [f for f in FILES if not (out / f"calendar.{f}").exists()]
    if missing:
        raise TenfoldError(f"Debian's {DEBIAN_PACKAGE} lacks calendar.{', calendar.'.join(missing)}")
    return out


def entries(name: str) -> list[tuple[str, str]]:
    """(MM/DD, text) of one calendar file ('history', 'birthday', 'music'), continuation lines joined."""
    if name not in FILES:
        raise TenfoldError(f"unknown calendar {name!r}; choose one of: {', '.join(FILES)}")
    rows: list[list[str]] = []
    path = prepare() / f"calendar.{name}"
    note_input(path)
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _DATE.match(line)
        if m:
            rows.append([f"{m.group(1)}/{m.group(2)}", m.group(3).strip()])
        elif line.startswith("\t") and rows:
            rows[-1][1] += " " + line.strip()
    return [(d, t) for d, t in rows]
