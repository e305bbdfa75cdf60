"""Connection handling for ``tenfold serve`` on uvicorn: idle connections time out, SIGTERM drains.

uvicorn's keep-alive timeout only starts after a response: a connection that never sends a whole request
(opened and left idle, or a header trickled byte by byte) is held forever. :class:`IdleTimeoutH11Protocol` (a
uvicorn ``http=`` protocol class) closes any connection with no request in flight for ``timeout_keep_alive``
seconds since it opened or since its last response. :class:`DrainingServer` (a ``uvicorn.Server``) turns the first
SIGTERM / SIGINT into a drain: new requests get 503 while active ones run on for up to ``drain_timeout`` seconds,
then every stream still open ends with a final chunk (``finish_reason: "abort"``) and ``[DONE]``, and only then does
the server stop listening.
"""
from __future__ import annotations

import threading
import time

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


class IdleTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, plus a deadline for connections that have no request in flight."""

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self._idle_since = time.monotonic()
        self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._check_idle)

    def on_response_complete(self) -> None:
        self._idle_since = time.monotonic()
        super().on_response_complete()

    def connection_lost(self, exc) -> None:
        timer = getattr(self, "_idle_timer", None)
        if timer is not None:
            timer.cancel()
        super().connection_lost(exc)

    def _check_idle(self) -> None:
        if self.transport.is_closing():
            return
        in_flight = self.cycle is not None and not self.cycle.response_complete
        left = self.timeout_keep_alive - (time.monotonic() - self._idle_since)
        if in_flight or left > 0:
            self._idle_timer = self.loop.call_later(max(left, 0.5) if not in_flight else self.timeout_keep_alive,
                                                    self._check_idle)
            return
        self.transport.close()


class DrainingServer(uvicorn.Server):
    """A uvicorn server whose first exit signal drains ``engine`` before the usual graceful shutdown.

    During the drain the server keeps listening: new requests get 503 (``shutting_down``), ``/health`` answers
    (``draining: true``), keep-alive connections stay usable, and running requests go on. When they have all ended,
    or ``drain_timeout`` seconds have passed (then every open stream ends with ``finish_reason: "abort"``), uvicorn's
    own shutdown starts. A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, engine, drain_timeout: float, poll_s: float = 0.1):
        super().__init__(config)
        self.engine, self.drain_timeout, self.poll_s = engine, drain_timeout, poll_s
        self._draining = False

    def handle_exit(self, sig, frame) -> None:
        if self._draining:  # a second signal: stop now
            return super().handle_exit(sig, frame)
        self._draining = True
        self.engine.drain()
        thread = threading.Thread(target=self._drain_then_exit, args=(sig, frame), name="tenfold-drain", daemon=True)
        thread.start()

    def _drain_then_exit(self, sig, frame) -> None:
        deadline = time.monotonic() + self.drain_timeout
        while time.monotonic() < deadline and self.engine.busy():
            time.sleep(self.poll_s)
        if self.engine.busy():
            self.engine.abort_all()
            end = time.monotonic() + 5  # the aborted streams send their last chunks
            while time.monotonic() < end and self.engine.busy():
                time.sleep(self.poll_s)
        time.sleep(self.poll_s)  # let the last responses leave before the listener closes
        super().handle_exit(sig, frame)
