"""The grown graph as a policy network (Najarro et al. 2023, Sec. 3.2).

Every node holds one scalar activation. An observation is clamped on the first ``n_in`` nodes
(the oldest), the state is propagated ``steps`` times through the weighted graph
(``s <- tanh(W s)``, observation re-clamped after each step), and the action is read from the
last ``n_out`` nodes (the youngest). The default number of steps is the graph's diameter plus 5,
so the observation can reach every output. ``recurrent=True`` keeps the state between
environment steps (the paper's setting); ``recurrent=False`` starts each step from zero, a
feed-forward reading of the same graph.
"""
from __future__ import annotations

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.ndp.growth import Grown, diameter


class TooSmall(TenfoldError):
    """The grown graph has fewer nodes than the task's inputs plus outputs."""


class GrownPolicy:
    def __init__(self, grown: Grown, n_in: int, n_out: int, steps: int | None = None, extra_steps: int = 5,
                 recurrent: bool = True):
        if grown.nodes < n_in + n_out:
            raise TooSmall(f"the grown graph has {grown.nodes} nodes; the task needs {n_in} inputs + {n_out} outputs")
        self.weights, self.n_in, self.n_out, self.recurrent = grown.weights, n_in, n_out, recurrent
        self.steps = steps if steps is not None else diameter(grown.adjacency) + extra_steps
        self.reset()

    def reset(self) -> None:
        self.state = np.zeros(len(self.weights))

    def __call__(self, observation) -> np.ndarray:
        obs = np.asarray(observation, dtype=np.float64).reshape(-1)
        if obs.shape != (self.n_in,):
            raise TenfoldError(f"the policy takes {self.n_in} inputs, got {obs.shape[0]}")
        s = self.state if self.recurrent else np.zeros_like(self.state)
        s[: self.n_in] = obs
        for _ in range(self.steps):
            s = np.tanh(self.weights @ s)
            s[: self.n_in] = obs
        self.state = s
        return s[-self.n_out :].copy()
