"""Stored responses of the Responses API (``store: true``), per API key, for ``previous_response_id`` and
``GET`` / ``DELETE /v1/responses/{id}``.

A stored response keeps its response object, its own turn of the conversation (the input messages it was given
and its output as an assistant message) and a link to the response it continued. A follow-up walks that chain to
rebuild the conversation. The newest response of a chain also keeps the conversation's exact text and token ids
through its output, so a follow-up can tokenize only its new text and continue the chain's sink-cache session
(its prefix is then the session's history token for token); that copy moves to the child when a chain grows, so
a chain holds it once. Each key holds at most ``max_per_key`` responses, least recently used first out. When a
response is deleted or pushed out, the responses that continued it take over its turn, so their chains can still
be continued.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class StoredResponse:
    id: str
    body: dict  # the response object, as returned
    messages: list[dict]  # this turn's input messages and its output (plain chat messages)
    input_items: list[dict]  # this turn's input items, as listed by GET /v1/responses/{id}/input_items
    previous: str | None  # the response this one continued
    session: str  # the client's name for the chain's sink-cache session (before the key's namespace)
    text: str | None = None  # the conversation's rendered text through this response's output
    ids: list[int] | None = None  # ... and its token ids (what the session cache consumed)


class ResponseStore:
    """Tenant -> LRU of :class:`StoredResponse` (used on the event loop only)."""

    def __init__(self, max_per_key: int = 256):
        if max_per_key < 1:
            raise ValueError(f"max_per_key must be >= 1, got {max_per_key}")
        self.max_per_key = max_per_key
        self._by_tenant: dict[str, OrderedDict[str, StoredResponse]] = {}

    def get(self, tenant: str, response_id: str) -> StoredResponse | None:
        items = self._by_tenant.get(tenant)
        found = None if items is None else items.get(response_id)
        if found is not None:
            items.move_to_end(response_id)
        return found

    def put(self, tenant: str, response: StoredResponse) -> None:
        items = self._by_tenant.setdefault(tenant, OrderedDict())
        parent = items.get(response.previous) if response.previous else None
        if parent is not None and response.text is not None:
            parent.text = parent.ids = None  # the chain's exact history now lives in its newest response
        items[response.id] = response
        while len(items) > self.max_per_key:
            self._remove(items, next(iter(items)))

    @staticmethod
    def _remove(items: OrderedDict, response_id: str) -> None:
        """Remove one response; the responses that continued it take over its turn (and its link), so their
        chains stay whole and can still be continued."""
        gone = items.pop(response_id)
        for child in items.values():
            if child.previous == response_id:
                child.messages = gone.messages + child.messages
                child.previous = gone.previous
                if child.session == gone.id:
                    child.session = gone.session

    def delete(self, tenant: str, response_id: str) -> bool:
        items = self._by_tenant.get(tenant)
        if items is None or response_id not in items:
            return False
        self._remove(items, response_id)
        return True

    def chain(self, tenant: str, response_id: str) -> list[StoredResponse] | None:
        """The responses from the chain's first to ``response_id``, oldest first; None when any is gone."""
        chain, at, seen = [], response_id, set()
        while at is not None:
            found = self.get(tenant, at)
            if found is None or at in seen:
                return None
            seen.add(at)
            chain.append(found)
            at = found.previous
        return chain[::-1]

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_tenant.values())

    def count(self, tenant: str) -> int:
        return len(self._by_tenant.get(tenant, ()))
