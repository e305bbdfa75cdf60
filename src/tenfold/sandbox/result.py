"""What a sandboxed run gives back: :class:`SandboxResult`, with one of :data:`STATUSES` and what the program tried
and was denied."""
from __future__ import annotations

from dataclasses import dataclass, field

from tenfold.sandbox.circumvention import CIRCUMVENTION_KINDS

STATUSES = ("ok", "error", "timeout", "memory", "blocked")


@dataclass
class SandboxResult:
    status: str
    outputs: list = field(default_factory=list)
    seconds: list = field(default_factory=list)  # per call, measured inside the sandbox
    message: str = ""
    violations: list = field(default_factory=list)  # actions that ended the run: {event, kind, detail}
    stdout: str = ""
    stderr: str = ""
    wall_seconds: float = 0.0
    isolation: str = ""  # "namespaces+seccomp", "namespaces" or "guard"
    attempts: list = field(default_factory=list)  # denied without ending the run: {event, kind, detail}

    def denied(self) -> dict:
        """What the program tried and was denied, counted by kind (see :data:`CIRCUMVENTION_KINDS`)."""
        counts: dict = {}
        for record in self.violations + self.attempts:
            kind = record.get("kind") if record.get("kind") in CIRCUMVENTION_KINDS else "other"
            counts[kind] = counts.get(kind, 0) + 1
        if self.status in ("timeout", "memory") or self.message.startswith("wrote more than"):
            counts["resource limit"] = counts.get("resource limit", 0) + 1
        return counts
