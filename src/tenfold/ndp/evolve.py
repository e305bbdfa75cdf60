"""Evolving NDP genomes with CMA-ES (Najarro et al. 2023, Sec. 3.3), with checkpoints and resumable runs.

The genome is the NDP's flat parameter vector, started from U[-1, 1] with step size 0.1 and
elitist CMA-ES, as in the paper's runs. A generation's candidates are scored on the same
episode seeds (common random numbers) in parallel worker processes on this machine, or on a Ray
cluster (``ray=``; see :mod:`tenfold.cluster`) with the same fitness values; the run directory keeps
``config.json``, ``checkpoint.pkl`` (the optimiser, written atomically every few generations),
``history.json`` and, at the end, ``best.npy``, ``centroid.npy`` and ``result.json``.
"""
from __future__ import annotations

import json
import os
import pickle
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.ndp.growth import NDP, NDPConfig
from tenfold.ndp.tasks import TASKS, Gym, make_task


@dataclass
class TrainConfig:
    task: str
    generations: int = 100
    popsize: int = 32
    sigma0: float = 0.1
    seed: int = 0
    workers: int = 1
    episodes: int = 3  # episodes per fitness evaluation (control tasks)
    eval_episodes: int = 100  # held-out episodes for the final measurement
    checkpoint_every: int = 10
    elitist: bool = True
    ndp: NDPConfig = field(default_factory=NDPConfig)

    def __post_init__(self):
        if self.task not in TASKS:
            raise TenfoldError(f"unknown NDP task {self.task!r}; choose one of: {', '.join(TASKS)}")
        if isinstance(self.ndp, dict):
            self.ndp = NDPConfig(**self.ndp)
        checks = {"generations": 1, "popsize": 4, "workers": 1, "episodes": 1, "eval_episodes": 1, "checkpoint_every": 1}
        for name, low in checks.items():
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise TenfoldError(f"{name} must be an integer >= {low} (got {value!r})")
        if not self.sigma0 > 0:
            raise TenfoldError(f"sigma0 must be > 0 (got {self.sigma0})")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ndp"] = self.ndp.to_dict()
        return d


# -- fitness in worker processes -------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(task: str, ndp_config: dict) -> None:
    _WORKER["task"], _WORKER["ndp"] = make_task(task), NDP(NDPConfig(**ndp_config))


def _fitness(args) -> float:
    genome, seed, episodes = args
    task, ndp = _WORKER["task"], _WORKER["ndp"]
    if isinstance(task, Gym):
        return task.fitness(ndp, genome, seed, episodes)
    return task.fitness(ndp, genome, seed)


class _Scorer:
    """Scores genomes in this process (workers=1), a local process pool, or a Ray pool (``ray`` an address)."""

    def __init__(self, cfg: TrainConfig, ray: str | None = None):
        self.cfg, self.pool, self.ray = cfg, None, None
        if ray is not None:
            from tenfold import cluster

            self.ray = cluster.connect(ray, num_cpus=cfg.workers)
            try:
                self.pool = self.ray.pool(cfg.workers, initializer=_init_worker,
                                          initargs=(cfg.task, cfg.ndp.to_dict()))
            except BaseException:
                self.ray.close()
                raise
        elif cfg.workers > 1:
            self.pool = ProcessPoolExecutor(cfg.workers, mp_context=get_context("fork" if "fork" in get_all_start_methods() else "spawn"), initializer=_init_worker,
                                            initargs=(cfg.task, cfg.ndp.to_dict()))
        else:
            _init_worker(cfg.task, cfg.ndp.to_dict())

    def __call__(self, genomes, seed: int) -> list[float]:
        jobs = [(np.asarray(g), seed, self.cfg.episodes) for g in genomes]
        if self.pool is None:
            return [_fitness(j) for j in jobs]
        chunk = max(1, len(jobs) // (4 * self.cfg.workers))
        if self.ray is None:
            return list(self.pool.map(_fitness, jobs, chunksize=chunk))
        from ray.exceptions import RayError

        try:
            return list(self.pool.map(_fitness, jobs, chunksize=chunk))
        except RayError as exc:  # a worker or node lost (Ray's OOM killer, a node gone): one line, not Ray's report
            lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
            why = lines[0][:300] if lines else exc.__class__.__name__
            raise TenfoldError(f"Ray lost the population's scoring ({exc.__class__.__name__}: {why}); "
                               "--resume continues from the last checkpoint") from None

    def close(self):
        if self.ray is not None:
            self.pool.terminate()
            self.ray.close()
        elif self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


# -- the run -----------------------------------------------------------------------------------
def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    tmp.replace(path)


def _start(cfg: TrainConfig, ndp: NDP):
    import cma

    rng = np.random.default_rng(cfg.seed)
    x0 = rng.uniform(-1, 1, ndp.num_parameters)
    options = {"popsize": cfg.popsize, "seed": cfg.seed + 1, "verbose": -9, "CMA_elitist": cfg.elitist}
    return {"es": cma.CMAEvolutionStrategy(x0, cfg.sigma0, options), "generation": 0, "history": [],
            "best": None, "best_fitness": -np.inf, "seconds": 0.0}


# Settings a checkpoint fixes (the CMA-ES state, the fitness seeds and episodes); --resume may change the others
# (generations, workers, checkpoint_every, eval_episodes).
RESUME_FIXED = ("popsize", "sigma0", "seed", "episodes", "elitist")


def check_run_dir(run: Path, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one that has no checkpoint."""
    ckpt = Path(run) / "checkpoint.pkl"
    if resume and not ckpt.is_file():
        raise TenfoldError(f"{run} has no checkpoint to resume from")
    if not resume and ckpt.exists():
        raise TenfoldError(f"{run} already holds a run; pass --resume to continue it or choose another --out")


def train(cfg: TrainConfig, run_dir: str | Path | None = None, resume: bool = False, progress=None,
          ray: str | None = None) -> dict:
    """Evolve an NDP for ``cfg.task``; returns the result dict (also written to ``run_dir/result.json``).

    ``resume``: continue the run in ``run_dir`` from its last checkpoint (same task and NDP).
    ``progress(generation, generations, best, mean)`` is called after each generation.
    ``ray``: score each population on Ray with ``cfg.workers`` pool processes instead of on this machine:
    ``'local'`` (start a Ray instance here), ``'auto'``, ``HOST:PORT`` or ``ray://HOST:PORT`` (join a cluster;
    every node needs tenfold installed). The fitness values are the same as with the local pool.
    Raises :class:`TenfoldError` for a bad config or run directory, Ray missing, or a cluster out of reach.
    """
    ndp = NDP(cfg.ndp)
    run = Path(run_dir) if run_dir else None
    state = None
    if run is not None:
        check_run_dir(run, resume)
        ckpt = run / "checkpoint.pkl"
        if resume:
            saved = json.loads((run / "config.json").read_text())
            if saved["task"] != cfg.task or saved["ndp"] != cfg.ndp.to_dict():
                raise TenfoldError(f"{run} holds a {saved['task']} run with a different NDP; start a new run directory")
            fixed = [f"{k} {getattr(cfg, k)} (the run's: {saved[k]})" for k in RESUME_FIXED
                     if k in saved and saved[k] != getattr(cfg, k)]
            if fixed:  # the checkpointed CMA-ES and fitness seeds hold these: they cannot change mid-run
                raise TenfoldError(f"--resume cannot change {', '.join(fixed)}; drop them or start a new run directory")
            try:
                state = pickle.loads(ckpt.read_bytes())
            except Exception as exc:  # a damaged file must not crash the CLI with a traceback
                raise TenfoldError(f"{ckpt}: damaged checkpoint ({exc.__class__.__name__})") from None
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    state = state or _start(cfg, ndp)
    es = state["es"]
    task = make_task(cfg.task)
    scorer = _Scorer(cfg, ray)
    try:
        while state["generation"] < cfg.generations:
            g = state["generation"]
            start = time.perf_counter()
            genomes = es.ask()
            fits = scorer(genomes, seed=cfg.seed * 100_003 + g * 97)
            es.tell(genomes, [-f for f in fits])
            top = int(np.argmax(fits))
            if fits[top] > state["best_fitness"]:
                state["best_fitness"], state["best"] = float(fits[top]), np.asarray(genomes[top]).copy()
            state["seconds"] += time.perf_counter() - start
            state["history"].append({"generation": g + 1, "best": float(fits[top]), "mean": float(np.mean(fits)),
                                     "best_so_far": state["best_fitness"], "step_size": float(es.sigma)})
            state["generation"] = g + 1
            if progress:
                progress(g + 1, cfg.generations, float(fits[top]), float(np.mean(fits)))
            done = task.target is not None and fits[top] >= task.target
            if run is not None and (done or state["generation"] % cfg.checkpoint_every == 0
                                    or state["generation"] == cfg.generations):
                _atomic_write(run / "checkpoint.pkl", pickle.dumps(state))
                _atomic_write(run / "history.json", json.dumps(state["history"]).encode())
            if done:
                break
    finally:
        scorer.close()
    return finish(cfg, ndp, state, run)


def finish(cfg: TrainConfig, ndp: NDP, state: dict, run: Path | None) -> dict:
    """Evaluate the best genome and the CMA-ES centroid on held-out seeds; write the run's files."""
    task = make_task(cfg.task)
    best, centroid = state["best"], np.asarray(state["es"].mean)
    kw = {"episodes": cfg.eval_episodes, "seed": 10_000 + cfg.seed} if isinstance(task, Gym) else {"seed": cfg.seed}
    best_eval, centroid_eval = task.evaluate(ndp, best, **kw), task.evaluate(ndp, centroid, **kw)
    grown = ndp.grow(best)
    result = {"task": cfg.task, "best_fitness": state["best_fitness"], "parameters": ndp.num_parameters,
              "nodes": grown.nodes, "edges": grown.edges, "generations": state["generation"],
              "evaluations": state["generation"] * cfg.popsize, "train_seconds": round(state["seconds"], 1),
              "seed": cfg.seed, "best": best_eval, "centroid": centroid_eval}
    if isinstance(task, Gym):
        result["eval_mean"], result["eval_std"] = best_eval["eval_mean"], best_eval["eval_std"]
    if run is not None:
        np.save(run / "best.npy", best)
        np.save(run / "centroid.npy", centroid)
        _atomic_write(run / "result.json", json.dumps(result, indent=1).encode())
    result["history"], result["genome"] = state["history"], best
    return result


def load_run(run_dir: str | Path) -> tuple[TrainConfig, NDP, np.ndarray, dict]:
    """A finished run: its config, NDP, best genome and result."""
    run = Path(run_dir)
    if not (run / "config.json").is_file():
        raise TenfoldError(f"{run} is not an NDP run directory (no config.json)")
    if not (run / "best.npy").is_file():
        raise TenfoldError(f"{run} has no finished result yet (resume it with tenfold ndp train --resume)")
    cfg = TrainConfig(**json.loads((run / "config.json").read_text()))
    result = json.loads((run / "result.json").read_text()) if (run / "result.json").is_file() else {}
    if (run / "history.json").is_file():
        result["history"] = json.loads((run / "history.json").read_text())
    return cfg, NDP(cfg.ndp), np.load(run / "best.npy"), result
