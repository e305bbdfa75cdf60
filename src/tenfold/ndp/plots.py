"""Pictures of an NDP run: the graph after each growth cycle, fitness curves, an episode as a GIF."""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tenfold.ndp.growth import NDP


def growth_figure(ndp: NDP, genome, title: str = "", n_in: int = 0, n_out: int = 0):
    """One panel per growth cycle; node colour = the first principal component of the embeddings
    (shared across panels), input nodes drawn as squares and output nodes as triangles."""
    import matplotlib.pyplot as plt
    import networkx as nx

    grown = ndp.grow(genome, record=True)
    stages = grown.stages
    final_h = grown.embeddings
    centre = final_h.mean(0)
    _, _, vt = np.linalg.svd(final_h - centre, full_matrices=False) if len(final_h) > 1 else (None, None, np.eye(final_h.shape[1]))
    axis = vt[0]
    values = [(h - centre) @ axis for _, h, _ in stages]
    lo = min(v.min() for v in values)
    hi = max(max(v.max() for v in values), lo + 1e-9)
    final = nx.from_numpy_array(np.triu(stages[-1][0], 1))
    pos = nx.spring_layout(final, seed=0) if len(final) > 1 else {0: np.zeros(2)}
    fig, axes = plt.subplots(1, len(stages), figsize=(2.4 * len(stages), 2.6))
    axes = np.atleast_1d(axes)
    for k, ((adjacency, h, _), ax, v) in enumerate(zip(stages, axes, values)):
        g = nx.from_numpy_array(np.triu(adjacency, 1))
        n = len(g)
        shapes = {i: ("s" if i < n_in else "^" if k == len(stages) - 1 and i >= n - n_out else "o") for i in range(n)}
        nx.draw_networkx_edges(g, pos, ax=ax, alpha=0.35, width=0.6)
        for shape in set(shapes.values()):
            nodes = [i for i in range(n) if shapes[i] == shape]
            nx.draw_networkx_nodes(g, pos, nodelist=nodes, node_shape=shape, node_size=70, ax=ax,
                                   node_color=[v[i] for i in nodes], cmap="viridis", vmin=lo, vmax=hi)
        ax.set_title(("start" if k == 0 else f"after cycle {k}") + f": {n} node" + ("s" if n > 1 else ""), fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def fitness_figure(histories: dict[str, list[dict]], ylabel: str = "fitness"):
    """Best and mean fitness per generation, one colour per run."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for (label, history), colour in zip(histories.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        gens = [h["generation"] for h in history]
        ax.plot(gens, [h["best"] for h in history], color=colour, label=f"{label} best")
        ax.plot(gens, [h["mean"] for h in history], color=colour, ls=":", label=f"{label} mean")
    ax.set_xlabel("generation")
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


@contextmanager
def _offscreen_sdl():
    """gymnasium draws rgb_array frames with pygame; SDL's default video driver probes for a display (Wayland,
    X11) and prints a false ``error: XDG_RUNTIME_DIR is invalid or not set`` on a headless machine. Offscreen
    frames need no display: SDL's ``dummy`` driver, for this rendering only (the caller's environment is restored;
    a driver the caller set is kept)."""
    if "SDL_VIDEODRIVER" in os.environ:
        yield
        return
    os.environ["SDL_VIDEODRIVER"] = "dummy"
    try:
        yield
    finally:
        os.environ.pop("SDL_VIDEODRIVER", None)


def episode_gif(task, ndp: NDP, genome, path: str | Path, seed: int = 0, every: int = 2, max_frames: int = 250) -> float:
    """Render one episode of the grown policy to ``path`` (GIF); returns the episode's return."""
    import gymnasium as gym
    from PIL import Image

    from tenfold.ndp.policy import GrownPolicy

    frames: list = []
    with _offscreen_sdl():
        env = gym.make(task.env_id, render_mode="rgb_array")
        total = task.episode(GrownPolicy(ndp.grow(genome), task.n_in, task.n_out), seed, env=env, frames=frames)
        env.close()
    images = [Image.fromarray(f).resize((f.shape[1] // 2, f.shape[0] // 2)) for f in frames[::every][:max_frames]]
    if images:
        images[0].save(path, save_all=True, append_images=images[1:], duration=40 * every, loop=0)
    return total
