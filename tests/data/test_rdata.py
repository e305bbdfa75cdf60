import gzip
import struct
import zlib

import pytest

from tenfold.data.rdata import read_lazyload_db, unserialize


def _i(v):
    return struct.pack(">i", v)


def _char(s):
    if s is None:
        return _i(9) + _i(-1)
    b = s.encode()
    return _i(0x40009) + _i(len(b)) + b


def _strsxp(items, names=None):
    out = _i(16 | (0x200 if names else 0)) + _i(len(items)) + b"".join(_char(s) for s in items)
    if names:
        out += _i(0x402) + _i(1) + _char("names") + _strsxp(names) + _i(254)
    return out


HEADER = b"X\n" + _i(3) + _i(0x40201) + _i(0x30500) + _i(5) + b"UTF-8"


def test_unserialize_character_vector_with_na():
    obj = unserialize(HEADER + _strsxp(["It is a truth", None, "é"]))
    assert obj == ["It is a truth", None, "é"]


def test_unserialize_named_vector_and_symbol_reference():
    # A list of two named character vectors; the second 'names' symbol is a back-reference.
    first = _strsxp(["a"], names=["x"])
    second = _i(16 | 0x200) + _i(1) + _char("b") + _i(0x402) + _i((1 << 8) | 255) + _strsxp(["y"]) + _i(254)
    obj = unserialize(HEADER + _i(19) + _i(2) + first + second)
    assert obj == [["a"], ["b"]]  # parsed by the rdata package, back-reference included


def test_rejects_non_xdr_input():
    with pytest.raises(ValueError, match="XDR"):
        unserialize(b"RDX2\n")


def test_lazyload_database_roundtrip(tmp_path):
    book = HEADER + _strsxp(["line one", "line two"])
    blob = _i(len(book)) + zlib.compress(book)
    ints = lambda *v: _i(13) + _i(len(v)) + b"".join(_i(x) for x in v)  # noqa: E731
    variables = _i(19 | 0x200) + _i(1) + ints(0, len(blob)) + _i(0x402) + _i(1) + _char("names") + _strsxp(["novel"]) + _i(254)
    index = HEADER + _i(19 | 0x200) + _i(1) + variables + _i(0x402) + _i((1 << 8) | 255) + _strsxp(["variables"]) + _i(254)
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(index))
    (tmp_path / "Rdata.rdb").write_bytes(blob)
    assert read_lazyload_db(tmp_path / "Rdata.rdx")["novel"] == ["line one", "line two"]


@pytest.mark.slow
def test_the_debian_package_reads_to_the_cached_books(tmp_path):
    """The real janeaustenr lazy-load database, through the rdata package, gives the six cached novels' text."""
    from tenfold.data.austen import BOOKS, SYSTEM_COPY, _apt_download, _lines_to_text, prepare, unpack_rdata

    rdx = SYSTEM_COPY if SYSTEM_COPY.exists() else unpack_rdata(_apt_download(str(tmp_path)), tmp_path / "rdata")
    objects = read_lazyload_db(rdx)
    cached = prepare()
    assert set(BOOKS) <= set(objects)
    for book in BOOKS:
        assert _lines_to_text(objects[book]) == (cached / f"{book}.txt").read_text(encoding="utf-8"), book
