"""Reading back what a sandboxed program wrote (its output, results and the hook's records), trusting none of it:
through descriptors opened before the run, bounded, and as plain data or nothing."""
from __future__ import annotations

import json
import os

def _read_fd(fd: int, limit: int) -> str:
    """The first ``limit`` bytes of an open file, as text. The parent reads what the program could touch only
    through descriptors it opened itself before the run: never by a path the program may have replaced with a
    symlink to a host file or a FIFO that would block the open."""
    try:
        return os.pread(fd, limit, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def _loads(text: str):
    """JSON from the program's side, or None: malformed, or nested deeper than the parser recurses."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        return None


def _records(fd: int) -> list[dict]:
    out = []
    for line in _read_fd(fd, 1 << 16).splitlines():
        record = _loads(line)
        if isinstance(record, dict) and isinstance(record.get("event"), str):
            out.append({"event": record["event"], "kind": str(record.get("kind", "other")),
                        "detail": str(record.get("detail", ""))[:200]})
    return out
