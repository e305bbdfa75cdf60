"""A small reader for R's XDR serialization format and lazy-load databases (.rdx/.rdb).

R packages with ``LazyData: true`` store their data sets in ``data/Rdata.rdb``: each object
is a 4-byte big-endian length followed by a zlib stream holding an XDR serialization, and
``data/Rdata.rdx`` (gzip or zlib compressed) maps each object name to its (offset, length)
in the .rdb. This reader covers the value types such data uses (vectors, lists, pairlists,
attributes, symbols and references); anything else raises ``ValueError``.
"""
from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

NILVALUE, REFSXP, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE = 254, 255, 253, 252, 251, 247
EMPTYENV, BASEENV, ALTREP = 242, 241, 238
SYMSXP, LISTSXP, CHARSXP, LGLSXP, INTSXP, REALSXP, STRSXP, VECSXP = 1, 2, 9, 10, 13, 14, 16, 19
NA_INTEGER = -(2**31)


class RObject:
    """A value plus its R attributes (``names``, ``class``, ...)."""

    def __init__(self, value, attributes: dict | None = None):
        self.value = value
        self.attributes = attributes or {}

    def __repr__(self) -> str:
        return f"RObject({type(self.value).__name__}, attributes={list(self.attributes)})"


class _Reader:
    def __init__(self, data: bytes):
        if data[:2] != b"X\n":
            raise ValueError("not an R XDR serialization (header is not 'X\\n')")
        self.data, self.pos, self.refs = data, 2, []
        version = self.int()
        if version not in (2, 3):
            raise ValueError(f"unsupported R serialization version {version}")
        self.int(), self.int()  # writer's R version, minimal reader version
        if version == 3:
            length = self.int()  # native encoding name, skipped
            self.pos += length

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def ints(self, n: int) -> list[int]:
        v = struct.unpack_from(f">{n}i", self.data, self.pos)
        self.pos += 4 * n
        return [None if x == NA_INTEGER else x for x in v]

    def doubles(self, n: int) -> list[float]:
        v = struct.unpack_from(f">{n}d", self.data, self.pos)
        self.pos += 8 * n
        return list(v)

    def charsxp(self) -> str | None:
        n = self.int()
        if n == -1:
            return None
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        return s.decode("utf-8", errors="replace")

    def attributes(self, has_attr: bool) -> dict:
        if not has_attr:
            return {}
        attrs = self.item()
        return attrs.value if isinstance(attrs, RObject) and isinstance(attrs.value, dict) else {}

    def flags(self) -> tuple[int, int, bool, bool]:
        """(raw flags, type, has attributes, has tag) of the next item."""
        flags = self.int()
        return flags, flags & 0xFF, bool(flags & (1 << 9)), bool(flags & (1 << 10))

    def item(self):
        flags, kind, has_attr, has_tag = self.flags()
        if kind in (NILVALUE, GLOBALENV, UNBOUNDVALUE, MISSINGARG, BASENAMESPACE, EMPTYENV, BASEENV):
            return None
        if kind == REFSXP:
            index = flags >> 8 or self.int()
            return self.refs[index - 1]
        if kind == SYMSXP:
            name = self.item()  # a CHARSXP
            self.refs.append(name)
            return name
        if kind == CHARSXP:
            return self.charsxp()
        if kind == LISTSXP:  # pairlist: iterate along CDRs, collect tag -> value
            out: dict = {}
            while True:
                self.attributes(has_attr)
                tag = self.item() if has_tag else str(len(out))
                out[tag] = self.item()
                flags, kind, has_attr, has_tag = self.flags()
                if kind == NILVALUE:
                    return RObject(out)
                if kind != LISTSXP:
                    raise ValueError(f"unexpected R type {kind} in a pairlist")
        if kind in (LGLSXP, INTSXP):
            value = self.ints(self.int())
        elif kind == REALSXP:
            value = self.doubles(self.int())
        elif kind == STRSXP:
            value = [self.item() for _ in range(self.int())]
        elif kind == VECSXP:
            value = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"unsupported R type {kind} in this reader")
        return RObject(value, self.attributes(has_attr))


def unserialize(data: bytes):
    """Parse one R XDR serialization into Python values wrapped in :class:`RObject`."""
    return _Reader(data).item()


def _decompress(raw: bytes) -> bytes:
    if raw[:2] == b"\x1f\x8b":
        return gzip.decompress(raw)
    return zlib.decompress(raw[4:]) if raw[4:6] in (b"x\x9c", b"x\x01", b"x\xda") else raw


def read_lazyload_db(rdx: str | Path) -> dict[str, object]:
    """Read every object of an R lazy-load database (``X.rdx`` beside ``X.rdb``) by name."""
    rdx = Path(rdx)
    index = unserialize(_decompress(rdx.read_bytes()))
    names = index.attributes.get("names").value
    variables = dict(zip(names, index.value))["variables"]
    var_names = variables.attributes["names"].value
    blob = rdx.with_suffix(".rdb").read_bytes()
    out = {}
    for name, where in zip(var_names, variables.value):
        offset, length = (int(x) for x in where.value)
        out[name] = unserialize(_decompress(blob[offset : offset + length]))
    return out
