"""R lazy-load databases (.rdx/.rdb), the way R packages with ``LazyData: true`` ship their data sets.

``data/Rdata.rdx`` (gzip- or zlib-compressed) is an R serialization of a list whose ``variables`` map each object
name to its (offset, length) in ``data/Rdata.rdb``; each object there is a 4-byte big-endian length followed by
the compressed R serialization (zlib, bzip2 or xz, as the index's ``compressed`` says). The serializations
themselves are parsed by the ``rdata`` package (PyPI, a maintained reader of R's XDR format); this module only
unpacks the container around them.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import warnings
import zlib
from pathlib import Path


def _plain(value):
    """numpy arrays / strings from ``rdata`` as plain Python lists and str (R's NA as None)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):  # a string R flagged neither UTF-8 nor latin-1: its bytes, read as UTF-8
        return value.decode("utf-8", errors="replace")
    return value


def unserialize(data: bytes):
    """One R XDR serialization (``X\\n`` header) as Python values: vectors as lists, named lists as dicts.

    Raises ValueError when ``data`` is not an XDR serialization."""
    import rdata

    if data[:2] != b"X\n":
        raise ValueError("not an R XDR serialization (expected the 'X\\n' header)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Unknown file type: assumed RDS": a bare serialization, as expected
        return _plain(rdata.conversion.convert(rdata.parser.parse_data(data, expand_altrep=True)))


def _decompress_index(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return zlib.decompress(raw[4:]) if raw[4:6] in (b"x\x9c", b"x\x01", b"x\xda") else raw


def _decompress_object(raw: bytes, method) -> bytes:
    """An .rdb entry: 4-byte length, then the payload compressed as the index says (R's ``lazyLoadDBinsertValue``)."""
    body = raw[4:]
    if method in (True, 1):
        return zlib.decompress(body)
    if method == 2:
        return bz2.decompress(body[1:] if body[:1] in (b"2", b"Z") else body)
    if method == 3:
        return lzma.decompress(body[1:] if body[:1] in (b"Z", b"2") else body)
    return body


def read_lazyload_db(rdx: str | Path) -> dict[str, object]:
    """Read every object of an R lazy-load database (``X.rdx`` beside ``X.rdb``) by name.

    Raises ValueError when the files are not a lazy-load database."""
    rdx = Path(rdx)
    index = unserialize(_decompress_index(rdx.read_bytes()))
    if not isinstance(index, dict) or "variables" not in index:
        raise ValueError(f"{rdx} is not an R lazy-load index (no 'variables')")
    compressed = index.get("compressed", [True])
    method = compressed[0] if isinstance(compressed, list) and compressed else compressed
    blob = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name, where in index["variables"].items():
        offset, length = (int(x) for x in where)
        out[name] = unserialize(_decompress_object(blob[offset : offset + length], method))
    return out
