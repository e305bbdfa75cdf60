"""The growth process of a Neural Developmental Program (Najarro, Sudhakaran & Risi 2023, Sec. 3).

A graph starts as one node carrying an embedding. Each growth cycle

1. propagates the embeddings over the graph (message passing: every node adds its neighbours'
   embeddings, weighted by the current edge weights, to its own, then a shared transform MLP maps
   the sum; as many steps as the graph's diameter plus ``growth_extra_steps``, so information can
   cross the whole graph);
2. asks the replication MLP of every node whether it divides (output > 0); a child connects to
   its parent and to the parent's neighbours (as they were at the start of the cycle) and takes
   the mean embedding of that neighbourhood, plus a learned offset (asymmetric division, below);
3. sets every edge's weight with the edge MLP from the embeddings of its two ends (symmetrised,
   so the grown graph stays undirected). After the last cycle the embeddings settle (one more
   propagation) and the edge MLP sets the final weights.

All MLPs are tanh networks with one hidden layer; together with the initial embedding they form
one flat parameter vector, the genome CMA-ES evolves. With the paper's sizes (embedding 5, hidden
5) that vector has 162 parameters, as in its CartPole experiment.

Asymmetric division (tenfold's choice, ``asymmetric_division=True`` by default, +embedding_size
parameters): grown from one node by the paper's rule alone, the first daughter is an exact copy of
its mother (the mean of a one-node neighbourhood is the mother) and later cells differ only through
small differences in wiring, so embeddings and edge weights come out nearly uniform. The paper's
code breaks this symmetry with a random (seeded) initial graph; starting from one node, tenfold
lets each daughter add a learned offset to the inherited mean embedding, as cells divide
asymmetrically. ``asymmetric_division=False`` is the paper's exact rule.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from tenfold.errors import TenfoldError


@dataclass(frozen=True)
class NDPConfig:
    embedding_size: int = 5
    hidden: int = 5
    growth_cycles: int = 5
    growth_extra_steps: int = 5  # message-passing steps per cycle on top of the graph's diameter
    weighted: bool = True  # False: every edge weighs 1 (the paper's "unweighted" variant)
    max_nodes: int = 64  # division stops once the graph has this many nodes
    asymmetric_division: bool = True  # daughters add a learned offset to the inherited embedding
    settle: bool = True  # propagate once more after the last division, before the edge MLP sets weights

    def __post_init__(self):
        for name in ("embedding_size", "hidden", "max_nodes"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise TenfoldError(f"NDP {name} must be a positive integer (got {getattr(self, name)!r})")
        for name in ("growth_cycles", "growth_extra_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise TenfoldError(f"NDP {name} must be an integer >= 0 (got {getattr(self, name)!r})")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Grown:
    """A grown graph: symmetric 0/1 ``adjacency`` (no self-loops), edge ``weights``, node ``embeddings``."""

    adjacency: np.ndarray
    weights: np.ndarray
    embeddings: np.ndarray
    stages: list = field(default_factory=list)  # (adjacency, embeddings, parents) at the start and after each cycle

    @property
    def nodes(self) -> int:
        return len(self.adjacency)

    @property
    def edges(self) -> int:
        return int(np.triu(self.adjacency, 1).sum())

    def to_networkx(self):
        import networkx as nx

        g = nx.Graph()
        g.add_nodes_from(range(self.nodes))
        for i, j in zip(*np.nonzero(np.triu(self.adjacency, 1))):
            g.add_edge(int(i), int(j), weight=float(self.weights[i, j]))
        return g


def diameter(adjacency: np.ndarray) -> int:
    """Longest shortest path (hops) of a connected graph; 0 for a single node."""
    from scipy.sparse.csgraph import shortest_path

    if len(adjacency) < 2:
        return 0
    d = shortest_path(adjacency, unweighted=True, directed=False)
    finite = d[np.isfinite(d)]
    return int(finite.max())


class _MLP:
    """Shapes of a one-hidden-layer tanh MLP inside the flat genome."""

    def __init__(self, n_in: int, hidden: int, n_out: int):
        self.shapes = [(n_in, hidden), (hidden,), (hidden, n_out), (n_out,)]
        self.size = sum(int(np.prod(s)) for s in self.shapes)

    def unpack(self, flat: np.ndarray) -> list[np.ndarray]:
        out, at = [], 0
        for s in self.shapes:
            n = int(np.prod(s))
            out.append(flat[at : at + n].reshape(s))
            at += n
        return out

    @staticmethod
    def apply(params: list[np.ndarray], x: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = params
        return np.tanh(np.tanh(x @ w1 + b1) @ w2 + b2)


class NDP:
    """A Neural Developmental Program: ``grow(genome)`` -> :class:`Grown`. Deterministic in the genome."""

    def __init__(self, config: NDPConfig | None = None):
        self.config = c = config or NDPConfig()
        e, h = c.embedding_size, c.hidden
        self.replication = _MLP(e, h, 1)
        self.transform = _MLP(e, h, e)
        self.edge = _MLP(2 * e, h, 1)
        self.num_parameters = (e * (2 if c.asymmetric_division else 1) + self.replication.size + self.transform.size
                               + (self.edge.size if c.weighted else 0))

    def _split(self, genome: np.ndarray):
        # Contiguous, always: CMA-ES hands out strided views, and the matrices unpacked from a view reach BLAS
        # with other strides, so the same numbers could round differently (and, in a chaotic episode, score
        # differently) in this process than pickled into a worker.
        genome = np.ascontiguousarray(genome, dtype=np.float64)
        if genome.shape != (self.num_parameters,):
            raise TenfoldError(f"this NDP takes a genome of {self.num_parameters} numbers, got shape {genome.shape}")
        if not np.isfinite(genome).all():
            raise TenfoldError("the genome contains NaN or infinity")
        e = self.config.embedding_size
        parts, at = {"embedding": genome[:e]}, e
        if self.config.asymmetric_division:
            parts["offset"], at = genome[e : 2 * e], 2 * e
        else:
            parts["offset"] = np.zeros(e)
        for name in ("replication", "transform") + (("edge",) if self.config.weighted else ()):
            mlp = getattr(self, name)
            parts[name] = mlp.unpack(genome[at : at + mlp.size])
            at += mlp.size
        return parts

    def propagate(self, adjacency: np.ndarray, weights: np.ndarray, h: np.ndarray, transform, steps: int) -> np.ndarray:
        """``steps`` rounds of message passing: each node adds its neighbours' embeddings, scaled by the
        edges' current weights, to its own; the transform MLP maps the sum (the paper's ``W^T h``
        propagation, with a self term). Sums, not means, keep degree and weights in the embedding,
        which is what lets cells differentiate."""
        closed = weights + np.eye(len(adjacency))
        for _ in range(steps):
            h = _MLP.apply(transform, closed @ h)
        return h

    def edge_weights(self, adjacency: np.ndarray, h: np.ndarray, edge) -> np.ndarray:
        if not self.config.weighted:
            return adjacency.astype(np.float64)
        i, j = np.nonzero(np.triu(adjacency, 1))
        w = np.zeros(adjacency.shape)
        if len(i):
            forward = _MLP.apply(edge, np.concatenate([h[i], h[j]], 1))[:, 0]
            backward = _MLP.apply(edge, np.concatenate([h[j], h[i]], 1))[:, 0]
            w[i, j] = w[j, i] = (forward + backward) / 2
        return w

    def grow(self, genome: np.ndarray, record: bool = False) -> Grown:
        c = self.config
        p = self._split(genome)
        h = p["embedding"][None, :].copy()
        adjacency = np.zeros((1, 1))
        stages = [(adjacency.copy(), h.copy(), np.array([], dtype=int))] if record else []
        weights = np.zeros((1, 1))
        for _ in range(c.growth_cycles):
            h = self.propagate(adjacency, weights, h, p["transform"], diameter(adjacency) + c.growth_extra_steps)
            divides = _MLP.apply(p["replication"], h)[:, 0] > 0
            n = len(h)
            room = c.max_nodes - n
            parents = np.flatnonzero(divides)[: max(0, room)]
            if len(parents):
                grown = np.zeros((n + len(parents), n + len(parents)))
                grown[:n, :n] = adjacency
                children = []
                for k, parent in enumerate(parents):
                    child = n + k
                    hood = np.concatenate([[parent], np.flatnonzero(adjacency[parent])])
                    grown[child, hood] = grown[hood, child] = 1
                    children.append(h[hood].mean(0) + p["offset"])
                adjacency, h = grown, np.concatenate([h, np.array(children)], 0)
            weights = self.edge_weights(adjacency, h, p.get("edge"))
            if record:
                stages.append((adjacency.copy(), h.copy(), parents.copy()))
        if c.settle and c.growth_cycles:
            # The newest cells carry only what they inherited; one more propagation lets their new wiring
            # tell them apart before the edge MLP sets the final weights.
            h = self.propagate(adjacency, weights, h, p["transform"], diameter(adjacency) + c.growth_extra_steps)
            weights = self.edge_weights(adjacency, h, p.get("edge"))
        return Grown(adjacency, weights, h, stages)
