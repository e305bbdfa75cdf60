"""Chinese prose from Debian's ``fortunes-zh`` package: text written without spaces between words.

The package's ``chinese`` fortune file holds some 2 MB of modern Chinese entries (Debian's code of
conduct, quotations, short essays), separated by ``%`` lines and coloured with ANSI escape codes;
``tang300`` holds the 300 Tang poems. The package is fetched with ``apt-get download`` and unpacked
in Python; entries are cleaned (escape codes removed) and cached as UTF-8 under
``$TENFOLD_HOME/data/fortunes-zh``. Licence: GPL-3.0+ (the packaging and selection).
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

DEBIAN_PACKAGE = "fortunes-zh"
FILES = ("chinese", "tang300")
_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def cache_dir() -> Path:
    return Path(home()) / "data" / "fortunes-zh"


def prepare() -> Path:
    """Fetch and cache the fortune files (once); returns the cache directory."""
    out = cache_dir()
    if all((out / f"{f}.txt").exists() for f in FILES):
        return out
    with tempfile.TemporaryDirectory() as tmp:
        deb = apt_download(DEBIAN_PACKAGE, tmp)
        files = deb_files(deb, lambda name: name.rsplit("/", 1)[-1] in FILES and "/fortunes/" in name)
        out.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = out / f"{Path(name).name}.txt"
            tmp_file = target.with_name(f".{target.name}.{os.getpid()}")
            tmp_file.write_text(_ESCAPE.sub("", data.decode("utf-8", errors="replace")), encoding="utf-8")
            tmp_file.replace(target)
    missing = [f for f in FILES if not (out / f"{f}.txt").exists()]
    if missing:
        raise TenfoldError(f"Debian's {DEBIAN_PACKAGE} lacks the fortune files {', '.join(missing)}")
    return out


def entries(name: str = "chinese") -> list[str]:
    """The entries of one fortune file ('chinese' or 'tang300'), each stripped, empty ones dropped."""
    if name not in FILES:
        raise TenfoldError(f"unknown fortune file {name!r}; choose one of: {', '.join(FILES)}")
    path = prepare() / f"{name}.txt"
    note_input(path)
    text = path.read_text(encoding="utf-8")
    return [e.strip() for e in re.split(r"^%\s*$", text, flags=re.M) if e.strip()]
