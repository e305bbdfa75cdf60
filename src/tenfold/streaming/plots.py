"""Plots for streaming perplexity (StreamingLLM Fig. 3 style: log-perplexity along the stream)."""
from __future__ import annotations

import numpy as np


def stride_of(result) -> int:
    """Spacing of the scored tokens (re-computation may score every k-th token only)."""
    return int(result.positions[1] - result.positions[0]) if result.positions.size > 1 else 1


def running_log_ppl(result, smooth: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Moving average over ``smooth`` tokens of the per-token NLL (log-perplexity), averaged over streams."""
    nll = np.atleast_2d(result.nll).mean(axis=0)
    k = max(1, min(smooth // stride_of(result), nll.size // 4 or 1))
    avg = np.convolve(nll, np.ones(k) / k, mode="valid")
    return result.positions[k - 1 : k - 1 + avg.size], avg


def plot_log_ppl(results: list, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for r in results:
        x, y = running_log_ppl(r)
        step = stride_of(r)
        note = f", scored on 1 in {step} tokens" if step > 1 else ""
        ax.plot(x, y, label=f"{r.method} (ppl {r.ppl:.2f}{note})", lw=1.3)
    ax.set_xlabel("tokens streamed")
    ax.set_ylabel("log perplexity (moving average)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
