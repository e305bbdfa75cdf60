"""The paper packages of tenfold, in the report's order: one list read by the CLI (each package's ``cli`` module
adds its verbs) and the experiment registry (each package's ``experiment`` module registers its reproductions)."""
from __future__ import annotations

PAPER_PACKAGES = ["streaming", "serve", "retrieval", "probes", "ndp", "stop", "prompting", "pause", "radit", "vision",
                  "kosmos_g", "lmm"]


def modules(kind: str) -> list[str]:
    """``tenfold.<package>.<kind>`` for every paper package (``kind``: ``cli`` or ``experiment``)."""
    return [f"tenfold.{package}.{kind}" for package in PAPER_PACKAGES]
