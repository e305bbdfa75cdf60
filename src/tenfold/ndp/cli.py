"""``tenfold ndp train|show``: grow networks with a Neural Developmental Program, evolved by CMA-ES."""
from __future__ import annotations

import json
from pathlib import Path

from tenfold.argtypes import StoreGiven, add_training_args, directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json


def add_commands(sub) -> None:
    from tenfold.ndp.tasks import TASKS

    p = sub.add_parser("ndp", help="neural developmental programs: networks that grow themselves (train | show)")
    verbs = p.add_subparsers(dest="ndp_verb", required=True, metavar="{train,show}")
    t = verbs.add_parser("train", help="evolve an NDP with CMA-ES; checkpoints in --out, resumable")
    t.add_argument("--task", required=True, choices=TASKS)
    t.add_argument("--generations", type=int, default=100)
    t.add_argument("--popsize", type=int, default=32, action=StoreGiven)
    t.add_argument("--workers", type=int, default=None,
                   help="processes scoring the population (default 1; with --ray, every CPU of the Ray cluster)")
    t.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                   help="score the population on Ray (pip install 'tenfold[cluster]'): no ADDRESS starts a local Ray "
                   "instance; HOST:PORT, ray://HOST:PORT or 'auto' joins a running cluster (tenfold on every node)")
    t.add_argument("--seed", type=random_seed, default=0, action=StoreGiven)
    t.add_argument("--sigma0", type=float, default=0.1, action=StoreGiven, help="CMA-ES initial step size (default 0.1, as the paper)")
    t.add_argument("--episodes", type=int, default=3, action=StoreGiven, help="episodes per fitness evaluation (control tasks)")
    t.add_argument("--eval-episodes", type=int, default=100, help="held-out episodes for the final measurement")
    t.add_argument("--embedding-size", type=int, default=5)
    t.add_argument("--hidden", type=int, default=5)
    t.add_argument("--growth-cycles", type=int, default=5)
    t.add_argument("--max-nodes", type=int, default=64)
    t.add_argument("--paper-division", action="store_true",
                   help="daughters copy the neighbourhood mean exactly (no learned offset; see the docs)")
    t.add_argument("--out", type=directory, default=None, help="run directory (default ndp-runs/TASK-seedS)")
    add_training_args(t, checkpoint_every_default=10, checkpoint_every_type=int, checkpoint_every_help=None,
                      resume_help="continue the run in --out from its last checkpoint", stop_after=False)
    t.add_argument("--json", action="store_true",
                   help="print task, best_fitness, eval_mean, eval_std, nodes, edges, parameters as JSON")
    t.set_defaults(func=_train)
    s = verbs.add_parser("show", help="draw a run's growth and fitness curve (and a GIF of an episode)")
    s.add_argument("run", help="a run directory written by tenfold ndp train")
    s.add_argument("--out", type=directory, default=None, help="where to write the pictures (default: the run directory)")
    s.add_argument("--gif", action="store_true", help="also render one episode of the grown policy (control tasks)")
    s.add_argument("--json", action="store_true", help="print the run's summary, the files written and the episode "
                                                       "return (--gif) as one JSON object")
    s.set_defaults(func=_show)


def _summary(result: dict) -> dict:
    out = {k: result.get(k) for k in ("task", "best_fitness", "eval_mean", "eval_std", "nodes", "edges", "parameters")}
    best = result.get("best", {})
    if result["task"] == "xor":
        out["eval_mean"], out["eval_std"] = best.get("accuracy"), None
    elif result["task"] == "smallworld":
        out["eval_mean"], out["eval_std"] = best.get("sigma"), None
    return out


def _train(args) -> int:
    from tenfold.ndp.evolve import TrainConfig, check_run_dir

    out = Path(args.out or f"ndp-runs/{args.task}-seed{args.seed}")
    check_run_dir(out, args.resume)
    if args.workers is not None:
        TrainConfig(task=args.task, workers=args.workers)  # bad --workers: one line before Ray starts
    cluster = None
    if args.ray is not None and args.workers is None:
        from tenfold import cluster as ray_cluster

        cluster = ray_cluster.connect(args.ray)  # train() reuses this connection
    try:
        return _run_training(args, out, args.workers or (max(1, cluster.cpus) if cluster else 1))
    finally:
        if cluster is not None:
            cluster.close()


def _run_training(args, out: Path, workers: int) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from tenfold.ndp.evolve import TrainConfig, train
    from tenfold.ndp.growth import NDPConfig

    ndp = NDPConfig(embedding_size=args.embedding_size, hidden=args.hidden, growth_cycles=args.growth_cycles,
                    max_nodes=args.max_nodes, asymmetric_division=not args.paper_division)
    fixed = {k: getattr(args, k) for k in ("popsize", "sigma0", "seed", "episodes")}
    if args.resume:  # what the checkpoint fixes is the run's own unless typed again (then train() checks it)
        saved = json.loads((out / "config.json").read_text())
        fixed.update({k: saved[k] for k in fixed if k in saved and k not in (getattr(args, "given", None) or ())})
    cfg = TrainConfig(task=args.task, generations=args.generations, workers=workers,
                      eval_episodes=args.eval_episodes, checkpoint_every=args.checkpoint_every, ndp=ndp, **fixed)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("{task.fields[stats]}")]
    with Progress(*columns, transient=False) as bar:  # on stderr: --json keeps it
        job = bar.add_task(f"ndp {args.task}", total=args.generations, stats="")

        top = [float("-inf")]

        def tick(gen, total, best, mean):
            top[0] = max(top[0], best)
            bar.update(job, completed=gen, stats=f"best so far {top[0]:.3f}  this generation: best {best:.3f} "
                                                 f"mean {mean:.3f}")

        result = train(cfg, out, resume=args.resume, progress=tick, ray=args.ray)
    summary = _summary(result)
    if args.json:
        print_json(summary)
    else:
        ev = "" if summary["eval_mean"] is None else f", held-out {summary['eval_mean']:.3f}"
        ev += "" if summary["eval_std"] is None else f" +- {summary['eval_std']:.3f}"
        where = "" if args.ray is None else f" (population scored by {workers} Ray workers)"
        print(f"{args.task}: best fitness {summary['best_fitness']:.3f}{ev}; grown network {summary['nodes']} nodes / "
              f"{summary['edges']} edges from {summary['parameters']} NDP parameters; run in {out}{where}")
    return 0


def _show(args) -> int:
    from tenfold.ndp.evolve import load_run
    from tenfold.ndp.plots import episode_gif, fitness_figure, growth_figure
    from tenfold.ndp.tasks import Gym, make_task

    cfg, ndp, best, result = load_run(args.run)
    task = make_task(cfg.task)
    out = Path(args.out or args.run)
    out.mkdir(parents=True, exist_ok=True)
    fig = growth_figure(ndp, best, f"{cfg.task}: growth of the best genome", task.n_in, task.n_out)
    fig.savefig(out / "growth.png", dpi=110)
    written = [out / "growth.png"]
    if result.get("history"):
        fig = fitness_figure({cfg.task: result["history"]})
        fig.savefig(out / "fitness.png", dpi=110)
        written.append(out / "fitness.png")
    ret = None
    if args.gif:
        if not isinstance(task, Gym):
            raise TenfoldError(f"--gif needs a control task (cartpole or lunarlander), not {cfg.task}")
        ret = episode_gif(task, ndp, best, out / "episode.gif")
        written.append(out / "episode.gif")
        if not args.json:
            print(f"episode return {ret:.1f}")
    if args.json:
        summary = _summary(result) if result else {"task": cfg.task}
        print_json({**summary, "run": str(Path(args.run).resolve()), "files": [str(w.resolve()) for w in written],
                    "episode_return": ret})
        return 0
    if result:
        print_json(_summary(result))
    print("wrote " + ", ".join(str(w) for w in written))
    return 0
