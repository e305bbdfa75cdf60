"""Figures for the space and time probes: R^2 by layer, a world map of held-out predictions, years."""
from __future__ import annotations

import numpy as np


def r2_by_layer(curves: dict[str, list[float]], baselines: dict[str, list[float]] | None = None, title: str = ""):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for i, (name, r2) in enumerate(curves.items()):
        line, = ax.plot(range(len(r2)), r2, "-", label=name)
        if baselines and name in baselines:
            ax.plot(range(len(baselines[name])), baselines[name], ":", color=line.get_color(), alpha=0.8)
    ax.axhline(0, color="black", lw=0.6)
    ax.set_xlabel("layer (0 = token embeddings)")
    ax.set_ylabel("held-out R$^2$")
    ax.set_ylim(min(-0.1, ax.get_ylim()[0]), 1)
    ax.set_title(title or "linear probe R$^2$ by layer (dotted: random-init model)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def world_map(true: np.ndarray, pred: np.ndarray, labels: list[str], title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    names = sorted(set(labels))
    cmap = plt.get_cmap("tab10")
    for k, name in enumerate(names):
        sel = np.array([lab == name for lab in labels])
        ax.scatter(true[sel, 0], true[sel, 1], s=4, color=cmap(k % 10), alpha=0.15)
        ax.scatter(pred[sel, 0], pred[sel, 1], s=7, color=cmap(k % 10), label=name)
    ax.set_xlim(-180, 180)
    ax.set_ylim(-60, 80)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title + " (faint: true positions; solid: probe predictions)")
    ax.legend(fontsize=7, markerscale=2, loc="lower left")
    fig.tight_layout()
    return fig


def years(true: np.ndarray, pred: np.ndarray, title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4))
    ax.scatter(true, pred, s=5, alpha=0.5)
    lo, hi = float(min(true.min(), pred.min())), float(max(true.max(), pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("true year")
    ax.set_ylabel("predicted year")
    ax.set_title(title)
    fig.tight_layout()
    return fig
