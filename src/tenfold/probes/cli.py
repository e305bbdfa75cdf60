"""``tenfold probes extract|fit|plot``: linear probes for space and time (Gurnee & Tegmark)."""
from __future__ import annotations


from tenfold.argtypes import directory
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json


def add_commands(sub) -> None:
    from tenfold.argtypes import add_device_arg
    from tenfold.probes.datasets import DATASETS

    p = sub.add_parser("probes", help="do LMs hold linear maps of space and time? (extract | fit | plot)")
    verbs = p.add_subparsers(dest="probes_verb", required=True, metavar="{extract,fit,plot}")
    for verb, text in (("extract", "cache last-token activations of every layer"),
                       ("fit", "ridge probe per layer, baselines, neurons"),
                       ("plot", "R^2 by layer and held-out predictions as PNG files")):
        q = verbs.add_parser(verb, help=text)
        q.add_argument("--dataset", required=True, choices=sorted(DATASETS))
        q.add_argument("--model", default=None, help="model name or path (default: the bundled SmolLM2)")
        q.add_argument("--prompt", default="bare", help="prompt variant: bare, coords (places), when (dates)")
        q.add_argument("--limit", type=int, default=None, help="use the first N entities (most prominent first)")
        add_device_arg(q)
        q.add_argument("--device-map", default=None, choices=["auto"],
                       help="auto: spread a model larger than one GPU over every GPU (and the CPU) with accelerate's "
                            "device_map (transformers from_pretrained); --device then only sets the default dtype")
        if verb == "fit":
            q.add_argument("--no-random-baseline", action="store_true", help="skip the randomly initialised model")
        if verb == "plot":
            q.add_argument("--out", type=directory, default="probes", help="directory for the PNG files")
        q.add_argument("--json", action="store_true", help={
            "extract": "print dataset, prompt, model, entities, layers, dims and the cache file as JSON",
            "fit": None, "plot": "print the PNG files written and the probe's metrics as JSON"}[verb])
        q.set_defaults(func=_run)


def _run(args) -> int:
    from rich.progress import Progress

    from tenfold.argtypes import out_dir
    from tenfold.models import load_lm
    from tenfold.probes.activations import cached_extract
    from tenfold.probes.datasets import load_dataset
    from tenfold.probes.study import run_study

    if args.probes_verb == "plot":
        out_dir(args.out)  # refused before minutes of extraction, not after
    if args.limit is not None and args.limit < 20:
        raise TenfoldError(f"--limit must be >= 20 (got {args.limit}); fitting a probe also needs 10 entities to "
                           "train on and 5 held out, about 40 or more on most datasets")
    data = load_dataset(args.dataset, args.limit)
    if args.prompt not in data.prompts:
        raise TenfoldError(f"dataset {data.name!r} has no prompt {args.prompt!r}; choose one of: {', '.join(data.prompts)}")
    if args.probes_verb != "extract":
        from tenfold.probes.fit import check_split

        check_split(data.is_test)  # before the model loads and the activations are extracted
    model, tok = load_lm(args.model, quantize=None, device=args.device, device_map=args.device_map)
    with Progress(transient=True) as bar:  # on stderr, so --json keeps it (tenfold.cli: only on a terminal)
        task = bar.add_task(args.probes_verb, total=None)

        def tick(what, done, total):
            bar.update(task, description=what, completed=done, total=total)

        if args.probes_verb == "extract":
            from tenfold.probes.activations import cache_path

            cache = cache_path(model, data.name, args.prompt, data.entities)
            was_cached = cache.exists()
            acts = cached_extract(model, tok, data.name, args.prompt, data.prompts[args.prompt], data.entities,
                                  progress=lambda d, t: tick("extract", d, t))
            if args.json:
                from tenfold.models.lm import DEFAULT_LM

                print_json({"dataset": data.name, "prompt": args.prompt, "model": args.model or DEFAULT_LM,
                            "entities": acts.shape[0], "layers": acts.shape[1], "dims": acts.shape[2],
                            "cache": str(cache), "was_cached": was_cached})
            else:
                print(f"{data.name}: {acts.shape[0]} entities x {acts.shape[1]} layers x {acts.shape[2]} dims cached")
            return 0
        study = run_study(model, tok, data, args.prompt, random_baseline=not getattr(args, "no_random_baseline", False),
                          progress=tick)
    m = study.metrics()
    if args.probes_verb == "fit":
        if args.json:
            print_json(m)
        else:
            unit = f", median error {m['median_km']:.0f} km" if "median_km" in m else (
                f", mean error {m['mean_abs_years']:.1f} years" if "mean_abs_years" in m else "")
            print(f"{data.name} ({m['entities']} entities, {m['test']} held out, prompt {args.prompt!r}): best layer "
                  f"{m['best_layer']} R^2 {m['r2']:.3f}, Spearman {m['spearman']:.3f}, proximity error "
                  f"{m['proximity_error']:.3f}{unit}; layer 0 R^2 {m['layer0_r2']:.3f}; shuffled targets "
                  f"{m['baseline_r2']:.3f}; random-init model {m['random_init_best_r2'] if m['random_init_best_r2'] is None else round(m['random_init_best_r2'], 3)}")
        return 0
    from pathlib import Path

    from tenfold.probes import plots
    from tenfold.probes.study import held_out_predictions, layer_r2

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plots.r2_by_layer({data.name: layer_r2(study.layers)}, {data.name: layer_r2(study.random_init)}).savefig(
        out / f"{data.name}-r2-by-layer.png", dpi=110)
    true, pred, labels = held_out_predictions(study)
    title = f"{data.name}, layer {m['best_layer']}"
    fig = plots.world_map(true, pred, labels, title) if data.kind == "space" else plots.years(true[:, 0], pred[:, 0], title)
    fig.savefig(out / f"{data.name}-held-out.png", dpi=110)
    if args.json:
        files = [str((out / f"{data.name}-{kind}.png").resolve()) for kind in ("r2-by-layer", "held-out")]
        print_json({"dataset": data.name, "out": str(out.resolve()), "files": files, **m})
    else:
        print(f"plots written to {out.resolve()}")
    return 0
