"""Which isolation a run gets: Linux namespaces (:mod:`tenfold.sandbox.namespaces`) where this machine has them,
else the in-process guard alone, and the one warning line that says so."""
from __future__ import annotations

import os

from tenfold.errors import TenfoldError

ISOLATION_MODES = ("auto", "namespaces", "guard")


class IsolationRequired(TenfoldError):
    """Raised when namespaces were required (``isolation="namespaces"``) but cannot be used here."""


def isolation_status() -> dict:
    """``{"isolation": label, "available": bool, "reason": why not}`` for this machine (probed once).

    ``label`` is what an ``auto`` run uses: ``namespaces+seccomp``, ``namespaces`` or ``guard``; with
    namespaces, ``uid_outside`` is what the sandbox's uid is on the host (0 when tenfold runs as root and
    the Python installation is not readable by others: see :mod:`tenfold.sandbox.namespaces`).
    """
    from tenfold.sandbox import namespaces

    label, why = namespaces.probe()
    status = {"isolation": label or "guard", "available": label is not None, "reason": why}
    if label:
        status["uid_outside"] = namespaces.host_uid()  # what the sandbox's uid 65534 is on the host (0: root)
    return status


def resolve_isolation(isolation: str | None = None) -> str:
    """The isolation a run gets: ``isolation`` (else ``$TENFOLD_SANDBOX``, else ``auto``) on this machine.

    Raises :class:`IsolationRequired` for ``namespaces`` where they are unavailable, ``TenfoldError`` for
    an unknown mode.
    """
    mode = isolation or os.environ.get("TENFOLD_SANDBOX") or "auto"
    if mode not in ISOLATION_MODES:
        raise TenfoldError(f"unknown sandbox isolation {mode!r}; choose one of: {', '.join(ISOLATION_MODES)}")
    if mode == "guard":
        return "guard"
    status = isolation_status()
    if status["available"]:
        return status["isolation"]
    if mode == "namespaces":
        raise IsolationRequired(f"sandbox isolation required but Linux namespaces are unavailable: {status['reason']}")
    return "guard"


def fallback_warning(isolation: str | None = None, require: bool = False) -> str | None:
    """The one warning line a command prints when model-written code would run under the guard only.

    ``require`` (the CLI's ``--require-isolation``) raises :class:`IsolationRequired` instead.
    """
    used = resolve_isolation("namespaces" if require else isolation)
    if used != "guard":
        return None
    if isolation == "guard":
        why, advice = "asked for", "pass --require-isolation to refuse"
    elif os.environ.get("TENFOLD_SANDBOX") == "guard":
        why, advice = "forced by TENFOLD_SANDBOX=guard", "unset TENFOLD_SANDBOX, or pass --require-isolation to refuse"
    else:
        why = isolation_status()["reason"]
        if "not installed" in why and "bwrap" in why:
            advice = "install bubblewrap"
        elif why.startswith("bwrap"):  # installed, but it cannot make the namespaces here
            advice = "let bubblewrap create user namespaces here (a container or sysctl may forbid them)"
        else:
            advice = "fix that"
        advice += ", or pass --require-isolation to refuse"
    return f"warning: model-written code runs under the in-process guard only, without OS isolation ({why}); {advice}"
