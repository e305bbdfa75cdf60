"""``ndp``: grow XOR and CartPole networks from one node (Najarro et al. 2023, Sec. 4 and Table 1)."""
from __future__ import annotations

import numpy as np

from tenfold.report import experiment


@experiment(
    "ndp", paper="ndp",
    claim="A Neural Developmental Program evolved with CMA-ES grows, from a single node, a network that solves "
          "XOR and balances CartPole (mean return 500 over 100 episodes), with a genome far smaller than the "
          "networks it could grow.",
    paper_numbers={"XOR": "solved; 14 NDP parameters -> 4 nodes / 7 edges",
                   "CartPole-v1 (100 episodes)": "500 +- 0; 162 NDP parameters -> 10 nodes / 33 edges",
                   "LunarLander-v3 (100 episodes)": "116 +- 124", "small-world coefficient sigma": "about 1.27",
                   "budget": "CMA-ES, population up to 512, up to 2000 generations"})
def ndp(run):
    from tenfold.ndp.benchmark import ray_overhead
    from tenfold.ndp.evolve import TrainConfig, train
    from tenfold.ndp.growth import NDP, NDPConfig
    from tenfold.ndp.plots import fitness_figure, growth_figure
    from tenfold.ndp.tasks import make_task

    seeds = run.pick([0], [0, 1, 2], [0, 1, 2, 3, 4])
    plan = {  # task: (generations, popsize, sigma0, eval episodes)
        "xor": run.pick((20, 16, 1.0, 1), (150, 32, 1.0, 1), (400, 64, 1.0, 1)),
        "cartpole": run.pick((4, 8, 0.5, 5), (150, 48, 0.5, 100), (300, 64, 0.5, 100)),
    }
    if run.profile == "full":
        plan["lunarlander"] = (400, 64, 0.5, 100)
        plan["smallworld"] = (100, 32, 0.5, 5)
    workers = 2
    run.settings.update(seeds=seeds, plan={t: dict(zip(("generations", "popsize", "sigma0", "eval_episodes"), v))
                                           for t, v in plan.items()},
                        ndp="embedding 5, hidden 5, 5 growth cycles from one node, weighted message passing, "
                            "asymmetric division (daughters add a learned offset), settle before final weights",
                        optimizer="elitist CMA-ES from U[-1,1]; fitness episodes share seeds within a generation",
                        fitness_episodes=3, workers=workers)
    ours, histories, best_runs = {}, {}, {}
    for task_name, (gens, pop, sigma0, eval_episodes) in plan.items():
        rows = []
        for seed in seeds:
            run.progress(f"{task_name}, seed {seed}")
            cfg = TrainConfig(task=task_name, generations=gens, popsize=pop, sigma0=sigma0, seed=seed,
                              workers=workers if task_name in ("cartpole", "lunarlander") else 1,
                              eval_episodes=eval_episodes)
            result = train(cfg)
            histories[f"{task_name} s{seed}"] = result.pop("history")
            rows.append(result)
        ours[task_name] = _summarise(task_name, rows)
        if task_name == "cartpole":
            cartpole_rows = rows
        best_runs[task_name] = max(rows, key=lambda r: r["best_fitness"])
    for task_name in plan:
        fig = fitness_figure({k: v for k, v in histories.items() if k.startswith(task_name)},
                             "return" if task_name in ("cartpole", "lunarlander") else "fitness")
        run.save_plot(fig, f"fitness_{task_name}")
    for task_name in ("xor", "cartpole"):
        r, task = best_runs[task_name], make_task(task_name)
        fig = growth_figure(NDP(NDPConfig()), r["genome"], f"{task_name} (seed {r['seed']}): growth of the best genome",
                            task.n_in, task.n_out)
        run.save_plot(fig, f"growth_{task_name}")
    # Benchmark row (issue 28): generations per minute scored in-process and by 1 and 2 Ray workers, one run.
    run.progress("ray overhead: cartpole generations per minute, in-process vs 1 and 2 Ray workers")
    bench = run.pick(dict(generations=3, popsize=8), dict(generations=6, popsize=16), dict(generations=10, popsize=32))
    try:
        ours["ray_overhead"] = ray_overhead(task="cartpole", workers=(1, 2), **bench)
    except Exception as exc:  # noqa: BLE001 - Ray failing to start here must not cost the reproduction above
        ours["ray_overhead"] = {"skipped": f"Ray could not run here: {exc.__class__.__name__}: {str(exc)[:200]}"}
    run.settings["ray_overhead"] = dict(task="cartpole", workers=[1, 2], **bench)
    xor_solved = ours["xor"]["solved_fraction"]
    cart = ours["cartpole"]
    checks = ndp_checks(ours["xor"], cartpole_rows)
    balance, chosen = checks[1].effect, chosen_seed(cartpole_rows)
    cart["check_seed"] = None if chosen is None else chosen["seed"]
    cart["check_returns"] = {"mean": balance.value, "ci95": [balance.low, balance.high], "episodes": balance.n}
    why = (f"XOR solved in {xor_solved:.0%} of {len(seeds)} seeds; CartPole best seed {cart['best_eval_mean']:.1f} "
           f"+- {cart['best_eval_std']:.1f} over held-out episodes with a grown network of {cart['best_nodes']} nodes / "
           f"{cart['best_edges']} edges from {cart['parameters']} parameters (mean over seeds {cart['mean_eval']:.1f}; "
           f"{cart['evaluations_per_seed']:.0f} evaluations per seed vs the paper's up to 1M); the seed with the best "
           f"training fitness (seed {cart.get('check_seed')}) returns {balance.value:.1f} over {balance.n} held-out "
           "episodes")
    if "lunarlander" in ours:
        why += f"; LunarLander best seed {ours['lunarlander']['best_eval_mean']:.1f}"
    if "smallworld" in ours:
        why += f"; small-world sigma {ours['smallworld']['best_sigma']}"
    ray_row = ours["ray_overhead"]
    if "rows" in ray_row:
        rates = ", ".join(f"{k} {v['generations_per_min']:.0f}" for k, v in ray_row["rows"].items())
        why += (f"; Ray benchmark, CartPole generations/min: {rates} (on {ray_row['machine_cpus']} CPUs a ratio of "
                "overhead, not a speed-up)")
    else:
        why += f"; Ray benchmark not run: {ray_row['skipped']}"
    return {"ours": ours, "checks": checks, "why": why}


def _summarise(task: str, rows: list[dict]) -> dict:
    runs = []
    for r in rows:
        runs.append({k: r[k] for k in ("seed", "best_fitness", "nodes", "edges", "generations", "train_seconds")})
    out = {"parameters": rows[0]["parameters"], "runs": runs,
           "evaluations_per_seed": float(np.mean([r["evaluations"] for r in rows]))}
    for row, r in zip(runs, rows):
        row.update({k: v for k, v in r["best"].items() if k not in ("outputs", "returns")})
    if task == "xor":
        out["solved_fraction"] = float(np.mean([r["best"]["solved"] for r in rows]))
        out["accuracy"] = [r["best"]["accuracy"] for r in rows]
    elif task == "smallworld":
        sigmas = [r["best"].get("sigma") for r in rows if r["best"].get("sigma") is not None]
        out["best_sigma"] = round(max(sigmas), 3) if sigmas else None
    else:
        best = max(rows, key=lambda r: r["eval_mean"] if r["eval_mean"] is not None else -1e9)
        means = [r["eval_mean"] for r in rows if r["eval_mean"] is not None]
        out.update(best_eval_mean=best["eval_mean"] or 0.0, best_eval_std=best["eval_std"] or 0.0,
                   best_nodes=best["nodes"], best_edges=best["edges"], mean_eval=float(np.mean(means)) if means else 0.0,
                   solved_seeds=int(sum(m >= 475 for m in means)))
    return out


# CartPole-v1 counts as solved at a mean return of 475 (gymnasium's reward_threshold); the paper's NDP reaches 500.
CARTPOLE_SOLVED = 475.0


def ndp_checks(xor: dict, cartpole_rows: list[dict]) -> list:
    """The NDP claim as checks:

    - an evolved NDP grows a network that solves XOR: the share of seeds whose best genome gets all four cases right
      (Wilson over seeds), > 0. At chance when no seed's network does better than 2 of 4 cases;
    - one balances CartPole: the held-out episode returns of the seed with the best training fitness (chosen without
      looking at the held-out episodes; ties: the first seed), Student-t over episodes, above
      :data:`CARTPOLE_SOLVED`. No interval when no seed grew a network big enough to act.
    """
    import math

    from tenfold.report.verdict import Check, Estimate, proportion, spread

    solved = sum(bool(r["solved"]) for r in xor["runs"])
    checks = [Check("XOR solved (share of seeds)", proportion(solved, len(xor["runs"]), "seeds"), threshold=0.0,
                    at_chance=all(a <= 0.5 for a in xor["accuracy"]))]
    chosen = chosen_seed(cartpole_rows)
    if chosen is not None:
        effect = spread(chosen["best"]["returns"], unit="episodes")
        name = f"CartPole held-out return (seed {chosen['seed']}, best training fitness)"
    else:
        effect = Estimate(0.0, -math.inf, math.inf, 0, "no interval: no seed grew a network that can act", "episodes")
        name = "CartPole held-out return"
    checks.append(Check(name, effect, threshold=CARTPOLE_SOLVED))
    return checks


def chosen_seed(rows: list[dict]) -> dict | None:
    """Of the runs whose best genome grew a network that can act, the one with the best training fitness (the first
    of equals); None when there is none."""
    acting = [r for r in rows if r["best"].get("returns")]
    return max(acting, key=lambda r: r["best_fitness"]) if acting else None
