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
    tenant: str = ""  # the API key's namespace ("" without keys)


class SessionStore:
    """LRU map of session id -> :class:`Session` (not thread-safe: the engine holds its lock).

    ``tenants``: how many API keys share the server. Each key gets an equal share of the bounds
    (``max_sessions // tenants`` sessions, ``max_memory_mb / tenants`` of cache memory, its running requests'
    caches included), and only its own sessions are evicted to keep it within them: no key can evict another's
    sessions, or learn from its own ``cached_tokens`` when another key is busy (issue 38 D6).
    """

    def __init__(self, max_sessions: int = 64, max_memory_mb: float = 2048, ttl_s: float = 3600, tenants: int = 1):
        if max_sessions < 1 or tenants < 1:
            raise ValueError(f"max_sessions and tenants must be >= 1, got {max_sessions} and {tenants}")
        self.max_sessions, self.max_bytes, self.ttl_s = max_sessions, max_memory_mb * 2**20, ttl_s
        self.tenants = tenants
        self.quota_sessions = max(1, max_sessions // tenants)
        self.quota_bytes = self.max_bytes / tenants
        self._items: OrderedDict[str, Session] = OrderedDict()
        self.evicted = 0
        self.evicted_by_tenant: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._items

    def get(self, session_id: str) -> Session | None:
        """The session, without touching its place in the LRU order."""
        return self._items.get(session_id)

    def memory_bytes(self, tenant: str | None = None) -> int:
        """Cache bytes of all sessions, or of ``tenant``'s."""
        return sum(cache_bytes(s.cache) for s in self._items.values() if tenant is None or s.tenant == tenant)

    def count(self, tenant: str) -> int:
        return sum(1 for s in self._items.values() if s.tenant == tenant)

    def acquire(self, session_id: str, new_cache: Callable[[], SinkCache], tenant: str = "") -> Session:
        session = self._items.get(session_id)
        if session is None:
            session = self._items[session_id] = Session(session_id, new_cache(), tenant=tenant)
        self._items.move_to_end(session_id)
        session.busy, session.last_used = True, time.monotonic()
        return session

    def release(self, session: Session, other: dict[str, int] | None = None) -> None:
        """Park ``session`` after a request: its cache is compacted to the tokens it holds (issue 25: idle sessions
        kept compactly), then the bounds are enforced."""
        session.busy, session.last_used = False, time.monotonic()
        session.cache = session.cache.compact()
        self.evict(other)

    def drop(self, session_id: str | None) -> None:
        if session_id is not None:
            gone = self._items.pop(session_id, None)
            if gone is not None:
                self.evicted += 1
                self.evicted_by_tenant[gone.tenant] = self.evicted_by_tenant.get(gone.tenant, 0) + 1

    def _fits(self, tenant: str, other: dict[str, int], needed: int = 0) -> bool:
        return self.count(tenant) <= self.quota_sessions and \
            self.memory_bytes(tenant) + other.get(tenant, 0) + needed <= self.quota_bytes

    def evict(self, other: dict[str, int] | None = None) -> None:
        """Evict idle sessions until every bound holds: past the TTL, then each key's least recently used first
        while that key is over its share.

        ``other``: per key, cache memory its running requests hold outside the store (counted against its share).
        """
        other = other or {}
        now = time.monotonic()
        for sid, s in list(self._items.items()):
            if not s.busy and now - s.last_used > self.ttl_s:
                self.drop(sid)
        for tenant in {s.tenant for s in self._items.values()}:
            idle = [sid for sid, s in self._items.items() if not s.busy and s.tenant == tenant]  # oldest first
            while idle and not self._fits(tenant, other):
                self.drop(idle.pop(0))

    def make_room(self, needed: int, other: dict[str, int] | None = None, tenant: str = "") -> bool:
        """Evict ``tenant``'s idle sessions until ``needed`` more bytes fit in its share, and return True; when even
        evicting all of them would not make them fit, evict nothing and return False (a request that is refused must
        not cost its key, or any other, their sessions)."""
        other = other or {}
        busy = sum(cache_bytes(s.cache) for s in self._items.values() if s.busy and s.tenant == tenant)
        if busy + other.get(tenant, 0) + needed > self.quota_bytes:
            return False
        idle = [sid for sid, s in self._items.items() if not s.busy and s.tenant == tenant]
        while idle and self.memory_bytes(tenant) + other.get(tenant, 0) + needed > self.quota_bytes:
            self.drop(idle.pop(0))
        return self.memory_bytes(tenant) + other.get(tenant, 0) + needed <= self.quota_bytes
