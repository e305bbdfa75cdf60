"""Fingerprints that bind an index to the documents it was built from.

An index answers for the texts it holds, so asking it about another document answers from the wrong
text. Each source document added to an index is recorded with its SHA-256 content hash, its size,
the chunker's settings and the embedder's fingerprint; :func:`check_document` refuses a document
whose hash is not among them.
"""
from __future__ import annotations

import hashlib

from tenfold.errors import TenfoldError


def content_hash(text: str) -> str:
    """SHA-256 (hex) of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def fingerprint(text: str, source: str, chunker: dict, embedder: dict) -> dict:
    """The record of one source document: name, sha256, chars, bytes, chunker settings, embedder fingerprint."""
    return {"source": source, "sha256": content_hash(text), "chars": len(text), "bytes": len(text.encode("utf-8")),
            "chunker": dict(chunker), "embedder": dict(embedder)}


def find(sources: list[dict], text: str) -> dict | None:
    """The record among ``sources`` whose content hash is ``text``'s, or None."""
    digest = content_hash(text)
    return next((s for s in sources if s.get("sha256") == digest), None)


def check_document(sources: list[dict], text: str, name: str, index_name: str) -> dict:
    """Return ``text``'s record in ``sources``; TenfoldError (one line) if the index was not built from it."""
    if not sources:
        raise TenfoldError(f"{index_name} records no source documents (built by an older tenfold?), so it cannot "
                           f"be checked against {name}: rebuild it with `tenfold rag index`")
    found = find(sources, text)
    if found is None:
        held = ", ".join(f"{s['source'] or '(unnamed)'} ({s['chars']:,} chars, sha256 {s['sha256'][:12]})"
                         for s in sources[:3]) + (f" and {len(sources) - 3} more" if len(sources) > 3 else "")
        raise TenfoldError(f"{name} ({len(text):,} chars, sha256 {content_hash(text)[:12]}) is not a document "
                           f"{index_name} was built from (it holds {held}); add it with `tenfold rag index {name} "
                           f"--out {index_name} --append`, or ask with --index alone")
    return found
