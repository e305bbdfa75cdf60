"""Services a sandboxed program may call (STOP's language model and utility): its requests come back over a pipe and
are answered here, in the parent, where budgets are counted."""
from __future__ import annotations

import json
import os
import time

from tenfold.sandbox.readback import _loads

class ServiceError(Exception):
    """Raised by a service handler: the message goes back to the program as a RuntimeError."""


def _serve(proc, request_fd: int, reply_fd: int, services: dict, deadline: float) -> bool:
    """Answer the program's service calls until it exits; True when the wall-clock deadline passed.

    Replies are written without blocking (a program that never reads them must not hold the parent past the
    deadline): what the pipe cannot take yet waits here, up to 8 MiB.
    """
    import select

    os.set_blocking(reply_fd, False)
    buffer, pending = b"", b""
    while True:
        left = deadline - time.perf_counter()
        if left <= 0:
            return True
        ready, writable, _ = select.select([request_fd], [reply_fd] if pending else [], [], min(left, 0.5))
        if writable:
            try:
                pending = pending[os.write(reply_fd, pending):]
            except BlockingIOError:
                pass
            except OSError:  # the program closed its end
                return False
        if not ready:
            if not writable and proc.poll() is not None:
                return False
            continue
        chunk = os.read(request_fd, 1 << 16)
        if not chunk:
            proc.wait(timeout=max(0.1, deadline - time.perf_counter()))
            return False
        buffer += chunk
        if len(buffer) > (8 << 20) or len(pending) > (8 << 20):
            return False  # a flood of requests, or of replies it does not read: stop serving; it is killed
        while b"\n" in buffer:
            if time.perf_counter() > deadline:
                return True
            line, buffer = buffer.split(b"\n", 1)
            try:
                request = _loads(line)
                if not isinstance(request, dict):
                    raise ValueError("not a JSON object")
                name, payload = request["service"], request["payload"]
                if name not in services:
                    raise ServiceError(f"no service {name!r}")
                reply = {"value": services[name][1](payload)}
            except ServiceError as exc:
                reply = {"error": str(exc)}
            except (ValueError, KeyError, TypeError, AttributeError, IndexError, RecursionError) as exc:
                # what a handler makes of a payload the runner would never send (the program wrote its own)
                reply = {"error": f"malformed request ({exc.__class__.__name__})"}
            pending += (json.dumps(reply) + "\n").encode()
        try:
            pending = pending[os.write(reply_fd, pending):] if pending else pending
        except BlockingIOError:
            pass
        except OSError:
            return False
