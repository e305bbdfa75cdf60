"""Plots for streaming perplexity (StreamingLLM Fig. 3 style: log-perplexity along the stream)."""
from __future__ import annotations

import numpy as np


def running_log_ppl(result, smooth: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Moving average of the per-token NLL (log-perplexity) along the stream, averaged over streams."""
    nll = np.atleast_2d(result.nll).mean(axis=0)
    k = max(1, min(smooth, nll.size // 4 or 1))
    avg = np.convolve(nll, np.ones(k) / k, mode="valid")
    return result.positions[k - 1 : k - 1 + avg.size], avg


def plot_log_ppl(results: list, title: str):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.2))
    for r in results:
        x, y = running_log_ppl(r)
        ax.plot(x, y, label=f"{r.method} (ppl {r.ppl:.2f})", lw=1.3)
    ax.set_xlabel("tokens streamed")
    ax.set_ylabel("log perplexity (moving average)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return fig
