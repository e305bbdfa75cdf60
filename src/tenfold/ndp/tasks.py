"""Fitness functions for NDP genomes (Najarro et al. 2023, Sec. 4): XOR, CartPole, LunarLander, small world.

Each task grows the genome's network and scores it. ``fitness(ndp, genome, seed)`` is what
CMA-ES maximises (cheap, a few episodes on seeds shared by the whole generation);
``evaluate(ndp, genome, episodes, seed)`` is the held-out measurement reported at the end.
A grown graph too small for the task's inputs and outputs scores below every real policy, less
the more nodes it lacks, so evolution is pushed to grow.
"""
from __future__ import annotations

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.ndp.growth import NDP, Grown
from tenfold.ndp.policy import GrownPolicy, TooSmall


class Task:
    name = ""
    n_in = n_out = 0
    target: float | None = None  # fitness at which training stops early
    worst = 0.0  # fitness below every real policy's

    def _too_small(self, grown: Grown) -> float:
        return self.worst - (self.n_in + self.n_out - grown.nodes)

    def fitness(self, ndp: NDP, genome, seed: int) -> float:
        raise NotImplementedError

    def evaluate(self, ndp: NDP, genome, episodes: int, seed: int) -> dict:
        raise NotImplementedError


class Xor(Task):
    """Inputs x1, x2 and a constant 1 (tanh propagation is odd: without a bias node (0,0) and (1,1)
    could not both map to 0); one output, read as its sign. Fitness 1 - mean squared error / 4 with
    targets -1/+1, so 0.95 or more means all four cases are right."""

    name, n_in, n_out, target, worst = "xor", 3, 1, 0.95, 0.0
    cases = np.array([[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=np.float64)
    labels = np.array([-1.0, 1.0, 1.0, -1.0])

    def outputs(self, ndp, genome) -> tuple[np.ndarray | None, Grown]:
        grown = ndp.grow(genome)
        try:
            policy = GrownPolicy(grown, self.n_in, self.n_out, recurrent=False)
        except TooSmall:
            return None, grown
        return np.array([policy(x)[0] for x in self.cases]), grown

    def fitness(self, ndp, genome, seed=0) -> float:
        out, grown = self.outputs(ndp, genome)
        if out is None:
            return self._too_small(grown)
        return float(1 - np.mean((out - self.labels) ** 2) / 4)

    def evaluate(self, ndp, genome, episodes=1, seed=0) -> dict:
        out, grown = self.outputs(ndp, genome)
        if out is None:
            return {"fitness": self._too_small(grown), "accuracy": 0.0, "solved": False}
        accuracy = float(np.mean(np.sign(out) == self.labels))
        return {"fitness": float(1 - np.mean((out - self.labels) ** 2) / 4), "accuracy": accuracy,
                "solved": accuracy == 1.0, "outputs": [round(float(o), 4) for o in out]}


class Gym(Task):
    """A gymnasium control task; discrete actions are the argmax of the output nodes."""

    def __init__(self, name: str, env_id: str, n_in: int, n_out: int, target: float, worst: float):
        self.name, self.env_id, self.n_in, self.n_out, self.target, self.worst = name, env_id, n_in, n_out, target, worst
        self._env = None

    @property
    def env(self):
        if self._env is None:
            import gymnasium as gym

            self._env = gym.make(self.env_id)
        return self._env

    def episode(self, policy: GrownPolicy, seed: int, env=None, frames: list | None = None) -> float:
        env = env or self.env
        obs, _ = env.reset(seed=int(seed))
        policy.reset()
        total, done = 0.0, False
        while not done:
            action = int(np.argmax(policy(obs)))
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
            if frames is not None:
                frames.append(env.render())
        return total

    def returns(self, ndp, genome, episodes: int, seed: int) -> tuple[list[float] | None, Grown]:
        grown = ndp.grow(genome)
        try:
            policy = GrownPolicy(grown, self.n_in, self.n_out)
        except TooSmall:
            return None, grown
        return [self.episode(policy, seed + i) for i in range(episodes)], grown

    def fitness(self, ndp, genome, seed: int, episodes: int = 3) -> float:
        returns, grown = self.returns(ndp, genome, episodes, seed)
        return self._too_small(grown) if returns is None else float(np.mean(returns))

    def evaluate(self, ndp, genome, episodes=100, seed=10_000) -> dict:
        returns, grown = self.returns(ndp, genome, episodes, seed)
        if returns is None:
            return {"fitness": self._too_small(grown), "eval_mean": None, "eval_std": None, "episodes": 0}
        return {"fitness": float(np.mean(returns)), "eval_mean": float(np.mean(returns)),
                "eval_std": float(np.std(returns)), "episodes": episodes,
                "solved": bool(np.mean(returns) >= self.target), "returns": [float(r) for r in returns]}


def small_world_sigma_estimate(adjacency: np.ndarray) -> float:
    """sigma = (C / C_rand) / (L / L_rand) with Erdos-Renyi estimates C_rand = k/n, L_rand = ln n / ln k."""
    import networkx as nx

    n = len(adjacency)
    g = nx.from_numpy_array(adjacency)
    k = 2 * g.number_of_edges() / n
    if n < 4 or k <= 1 or not nx.is_connected(g):
        return 0.0
    c, path = nx.average_clustering(g), nx.average_shortest_path_length(g)
    return float((c / (k / n)) / (path / (np.log(n) / np.log(k))))


class SmallWorld(Task):
    """Grow a graph whose small-world coefficient sigma is high (sigma > 1: small world).

    Fitness uses the closed-form random-graph estimate; ``evaluate`` reports networkx's sigma
    (random reference graphs with the same degree sequence)."""

    name, n_in, n_out, target, worst = "smallworld", 0, 0, None, 0.0
    min_nodes = 10

    def fitness(self, ndp, genome, seed=0) -> float:
        grown = ndp.grow(genome)
        if grown.nodes < self.min_nodes:
            return self.worst - (self.min_nodes - grown.nodes)
        return small_world_sigma_estimate(grown.adjacency)

    def evaluate(self, ndp, genome, episodes=5, seed=0) -> dict:
        import networkx as nx

        grown = ndp.grow(genome)
        estimate = self.fitness(ndp, genome)
        g = grown.to_networkx()
        sigma = None
        if grown.nodes >= self.min_nodes and nx.is_connected(g) and estimate > 0:
            sigma = float(nx.sigma(g, niter=20, nrand=episodes, seed=seed))
        return {"fitness": estimate, "sigma": sigma, "sigma_estimate": estimate,
                "clustering": float(nx.average_clustering(g))}


def make_task(name: str) -> Task:
    if name == "xor":
        return Xor()
    if name == "cartpole":
        return Gym("cartpole", "CartPole-v1", 4, 2, target=500.0, worst=0.0)
    if name == "lunarlander":
        return Gym("lunarlander", "LunarLander-v3", 8, 4, target=200.0, worst=-1000.0)
    if name == "smallworld":
        return SmallWorld()
    raise TenfoldError(f"unknown NDP task {name!r}; choose one of: {', '.join(TASKS)}")


TASKS = ("xor", "cartpole", "lunarlander", "smallworld")
