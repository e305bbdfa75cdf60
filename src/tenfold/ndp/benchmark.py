"""NDP generations per minute: the same CMA-ES run scored in this process and by 1 and 2 Ray workers.

One run, three scorers, the same seeds: every mode evolves the same genomes (the fitness values are equal,
which the row records), so the rates differ only by where the population is scored. A generation's time
is taken between two progress callbacks (ask, score, tell), after the pool is up; starting Ray and its
pool are timed apart. Every mode computes with one BLAS thread per process (Ray starts its workers with
``OMP_NUM_THREADS=1``; the in-process row is held to the same with threadpoolctl): otherwise the in-process row
would measure OpenBLAS spreading tiny matrix products over two threads, which is slower, not Ray. On a machine with few cores this is a ratio of overhead, not a speed-up: the Ray
workers share the cores with the driver and Ray's own services.
"""
from __future__ import annotations

import os
import time


def ray_overhead(task: str = "cartpole", generations: int = 6, popsize: int = 16, workers: tuple[int, ...] = (1, 2),
                 seed: int = 0, sigma0: float = 0.5) -> dict:
    """Generations per minute with the in-process scorer and with each Ray pool size in ``workers``.

    Returns ``{"rows": {mode: {"generations_per_min", "pool_start_s"}}, "ray_start_s", "same_fitness",
    "ratio_vs_in_process": {mode: rate / in-process rate}, ...}``, or ``{"skipped": why}`` when Ray is not
    installed. Raises :class:`TenfoldError` for a bad task or sizes (``generations`` must be >= 2: the rate
    is measured between generations).
    """
    from tenfold import cluster
    from tenfold.errors import TenfoldError
    from tenfold.ndp.evolve import TrainConfig, train

    if generations < 2:
        raise TenfoldError(f"generations must be >= 2 to time a generation (got {generations})")
    if not workers or any(not isinstance(n, int) or n < 1 for n in workers):
        raise TenfoldError(f"workers must be Ray pool sizes >= 1 (got {workers!r})")
    try:
        import ray  # noqa: F401
    except ImportError:
        return {"skipped": "Ray is not installed (pip install 'tenfold[cluster]')"}

    def timed(cfg, ray_address=None):
        stamps = []
        start = time.perf_counter()
        result = train(cfg, progress=lambda *_: stamps.append(time.perf_counter()), ray=ray_address)
        per_gen = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
        return result, {"generations_per_min": round(60 / per_gen, 1),
                        "pool_start_s": round(stamps[0] - start - per_gen, 2)}  # all before generation 1's work

    base = dict(task=task, generations=generations, popsize=popsize, seed=seed, sigma0=sigma0, eval_episodes=1)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        reference, rows = timed(TrainConfig(**base, workers=1))
    rows = {"in-process": rows}
    t0 = time.perf_counter()
    conn = cluster.connect(cluster.LOCAL, num_cpus=max(workers))
    ray_start = time.perf_counter() - t0
    same = True
    try:
        for n in workers:
            result, row = timed(TrainConfig(**base, workers=n), cluster.LOCAL)
            rows[f"ray {n} worker{'s' if n > 1 else ''}"] = row
            same = same and result["history"] == reference["history"]
    finally:
        conn.close()
    base_rate = rows["in-process"]["generations_per_min"]
    return {"rows": rows, "ratio_vs_in_process": {k: round(v["generations_per_min"] / base_rate, 3)
                                                  for k, v in rows.items()},
            "ray_start_s": round(ray_start, 2), "same_fitness": same, "machine_cpus": os.cpu_count(),
            "settings": {**base, "workers": list(workers), "blas_threads_per_process": 1},
            "note": "a ratio of overhead on this machine (Ray workers share its cores with the driver and Ray's "
                    "services), not a speed-up"}
