"""Reading users' own text files, with clear errors for what cannot be used."""
from __future__ import annotations

from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.provenance import note_input


def read_text(path: str | Path) -> str:
    """Return the UTF-8 text of ``path``; missing, empty, binary or non-UTF-8 files raise TenfoldError."""
    p = Path(path)
    if not p.exists():
        raise TenfoldError(f"text file not found: {p}")
    if p.is_dir():
        raise TenfoldError(f"expected a text file, got a directory: {p}")
    note_input(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise TenfoldError(f"cannot read {p}: {exc.strerror}") from None
    if b"\x00" in raw[:65536]:
        raise TenfoldError(f"{p} looks binary (it contains NUL bytes), not text")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TenfoldError(f"{p} is not UTF-8 text (bad byte at offset {exc.start})") from None
    if not text.strip():
        raise TenfoldError(f"{p} is empty")
    return text
