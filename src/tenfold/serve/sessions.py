"""Conversation sessions for ``tenfold serve``: one sink cache per session id, LRU-evicted within bounds.

A session remembers the token ids its cache has consumed, so a later request whose prompt starts
with them only feeds the rest (each chat turn then costs its new tokens, however long the
conversation: StreamingLLM's multi-round setting, Sec. 4.4). Idle sessions are evicted least
recently used first, to keep at most ``max_sessions`` sessions, ``max_memory_mb`` of caches and
none idle for longer than ``ttl_s``; a session in use by a request is never evicted. The memory bound also covers
caches outside the store that the engine reports (``n`` choices forked from one prompt): see :meth:`make_room`.
A parked session holds only its filled cache columns (:meth:`SinkCache.compact`), so it counts what it holds.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from tenfold.streaming.sink_cache import SinkCache


def cache_bytes(cache: SinkCache) -> int:
    """Bytes held by a sink cache's key/value buffers (pre-allocated room included)."""
    return cache.nbytes()


@dataclass
class Session:
    id: str
    cache: SinkCache
    consumed: list[int] = field(default_factory=list)  # token ids fed through ``cache``, in order
    busy: bool = False
    last_used: float = field(default_factory=time.monotonic)


class SessionStore:
    """LRU map of session id -> :class:`Session` (not thread-safe: the engine holds its lock)."""

    def __init__(self, max_sessions: int = 64, max_memory_mb: float = 2048, ttl_s: float = 3600):
        if max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {max_sessions}")
        self.max_sessions, self.max_bytes, self.ttl_s = max_sessions, max_memory_mb * 2**20, ttl_s
        self._items: OrderedDict[str, Session] = OrderedDict()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._items

    def memory_bytes(self) -> int:
        return sum(cache_bytes(s.cache) for s in self._items.values())

    def acquire(self, session_id: str, new_cache: Callable[[], SinkCache]) -> Session:
        session = self._items.get(session_id)
        if session is None:
            session = self._items[session_id] = Session(session_id, new_cache())
        self._items.move_to_end(session_id)
        session.busy, session.last_used = True, time.monotonic()
        return session

    def release(self, session: Session) -> None:
        """Park ``session`` after a request: its cache is compacted to the tokens it holds (issue 25: idle sessions
        kept compactly), then the bounds are enforced."""
        session.busy, session.last_used = False, time.monotonic()
        session.cache = session.cache.compact()
        self.evict()

    def drop(self, session_id: str | None) -> None:
        if session_id is not None and self._items.pop(session_id, None) is not None:
            self.evicted += 1

    def evict(self, other_bytes: int = 0) -> None:
        """Evict idle sessions, least recently used first, until every bound holds.

        ``other_bytes``: cache memory held outside the store, counted against ``max_memory_mb`` too.
        """
        now = time.monotonic()
        for sid, s in list(self._items.items()):
            if not s.busy and now - s.last_used > self.ttl_s:
                self.drop(sid)
        idle = [sid for sid, s in self._items.items() if not s.busy]  # oldest first
        while idle and (len(self._items) > self.max_sessions or self.memory_bytes() + other_bytes > self.max_bytes):
            self.drop(idle.pop(0))

    def make_room(self, needed: int, other_bytes: int = 0) -> bool:
        """Evict idle sessions until ``needed`` more bytes fit under the memory bound, and return True; when even
        evicting every idle session would not make them fit, evict nothing and return False (a request that is
        refused must not cost other users their sessions)."""
        busy = sum(cache_bytes(s.cache) for s in self._items.values() if s.busy)
        if busy + other_bytes + needed > self.max_bytes:
            return False
        self.evict(other_bytes + needed)
        return self.memory_bytes() + other_bytes + needed <= self.max_bytes
