"""``tenfold pause pretrain|finetune|eval``: pause tokens for any causal LM (Goyal et al. 2023)."""
from __future__ import annotations

import json
from pathlib import Path

from tenfold.argtypes import add_training_args, directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import loss_bar


def add_commands(sub) -> None:
    from tenfold.argtypes import StoreGiven
    from tenfold.pause.sizes import SIZES
    from tenfold.pause.tasks import TASKS

    p = sub.add_parser("pause", help="pause tokens: pause-pretraining, pause-finetuning, inference with pauses")
    verbs = p.add_subparsers(dest="pause_verb", required=True, metavar="{pretrain,finetune,eval}")

    def common(q, steps, lr, batch):
        # StoreGiven: --resume refuses a setting given anew that differs from the run's saved one
        q.add_argument("--out", type=directory, required=True, help="run directory (checkpoints, the final model in OUT/model)")
        q.add_argument("--steps", type=int, default=steps, action=StoreGiven)
        q.add_argument("--batch-size", type=int, default=batch, action=StoreGiven)
        q.add_argument("--lr", type=float, default=lr, action=StoreGiven)
        q.add_argument("--seed", type=random_seed, default=0, action=StoreGiven)
        add_training_args(q, checkpoint_every_default=100, checkpoint_every_action=StoreGiven,
                          resume_help="continue the run in --out with its saved settings (giving a different one is "
                                      "an error)")
        q.add_argument("--json", action="store_true", help="print the model's path, steps, losses and the run's "
                                                           "settings as JSON (progress still goes to stderr)")

    t = verbs.add_parser("pretrain", help="pretrain a small Llama-style model from scratch, with or without pauses")
    common(t, 2000, 1e-3, 32)
    t.add_argument("--text", default=None, action=StoreGiven,
                   help="a text file to pretrain on (default: Austen + generic text)")
    t.add_argument("--size", choices=sorted(SIZES), default="tiny", action=StoreGiven)
    t.add_argument("--seq-len", type=int, default=64, action=StoreGiven)
    t.add_argument("--vocab-size", type=int, default=1024, action=StoreGiven)
    t.add_argument("--pause-rate", type=float, default=0.1, action=StoreGiven,
                   help="fraction of each sequence replaced by <pause> (0 = standard pretraining; default 0.1)")
    t.set_defaults(func=_pretrain)

    f = verbs.add_parser("finetune", help="fine-tune a model on downstream tasks with M_ft pauses after the input")
    common(f, 500, 5e-4, 32)
    f.add_argument("--model", required=True, help="a pretrain run directory, a saved model, or an LM name/path "
                                                  "(e.g. smollm2-135m-instruct)")
    f.add_argument("--task", action="append", choices=sorted(TASKS), required=True, help="repeat for a mixture")
    f.add_argument("--m-ft", type=int, default=10, action=StoreGiven,
                   help="pauses appended to every input (0 = standard fine-tuning)")
    f.add_argument("--n-train", type=int, default=2000, action=StoreGiven, help="training examples per task")
    f.set_defaults(func=_finetune)

    e = verbs.add_parser("eval", help="held-out exact-match accuracy with M_inf pauses at inference")
    e.add_argument("--model", required=True, help="a run directory or saved model (or an LM name/path)")
    e.add_argument("--task", action="append", choices=sorted(TASKS), required=True)
    e.add_argument("--m-inf", type=int, action="append", default=None,
                   help="pauses at inference; repeat for a sweep (default: the model's M_ft, else 0)")
    e.add_argument("--n", type=int, default=200, help="held-out examples per task")
    e.add_argument("--show", type=int, default=0, help="print this many examples with the model's answers")
    from tenfold.argtypes import add_device_arg

    add_device_arg(e)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_eval)


def _run_args(args, keys: list[str]) -> dict:
    """This run's arguments: the saved ones when resuming, else those given (recorded by :func:`_record`)."""
    from tenfold.pause.training import check_run_dir

    out = Path(args.out)
    check_run_dir(out, args.resume)
    if not args.resume:
        return {k: getattr(args, k) for k in keys}
    path = out / "args.json"
    if not path.exists():
        raise TenfoldError(f"{out} has no args.json; it was not written by tenfold pause")
    saved = json.loads(path.read_text())
    if json.loads((out / "state.json").read_text()).get("step", 0) >= saved["steps"]:
        raise TenfoldError(f"the run in {out} already finished ({saved['steps']} steps)")
    # --model and --task are required, so always given; the others only when typed (argtypes.StoreGiven)
    given = set(getattr(args, "given", None) or ()) | ({"model", "task"} & set(keys))
    changed = [k for k in keys if k in given and k in saved and getattr(args, k) != saved[k]]
    if changed:
        what = ", ".join(f"--{k.replace('_', '-')} {getattr(args, k)!r} (the run's: {saved[k]!r})" for k in changed)
        raise TenfoldError(f"--resume continues the run in {out} with its saved settings and cannot change {what}; "
                           f"give the run's own values (or leave them out) or start a new run in another --out")
    return saved


def _record(args, a: dict) -> None:
    """Write the run's arguments once everything they name has loaded (a failed start leaves no directory)."""
    from tenfold.models.finetune import is_main_process

    if not args.resume and is_main_process():  # under `accelerate launch`, one process writes
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "args.json").write_text(json.dumps(a, indent=1))


def _pretrain(args) -> int:
    from transformers import AutoTokenizer

    from tenfold.models.finetune import is_main_process
    from tenfold.pause.corpus import check_vocab_size, pretraining_text, train_tokenizer
    from tenfold.pause.training import TrainConfig, small_llama, token_stream, train

    a = _run_args(args, ["text", "size", "seq_len", "vocab_size", "pause_rate", "steps", "batch_size", "lr", "seed",
                         "checkpoint_every"])
    cfg = TrainConfig(steps=a["steps"], batch_size=a["batch_size"], lr=a["lr"], seq_len=a["seq_len"],
                      pause_rate=a["pause_rate"], seed=a["seed"], checkpoint_every=a["checkpoint_every"])
    cfg.check()
    check_vocab_size(a["vocab_size"])
    if a["text"]:
        from tenfold.data.text import read_text

        text = read_text(a["text"])
    else:
        text = pretraining_text(seed=a["seed"])
    out = Path(args.out)
    if args.resume:
        tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    else:
        tok = train_tokenizer(text, a["vocab_size"])
        _record(args, a)
        if is_main_process():
            tok.save_pretrained(out / "tokenizer")
    stream = token_stream(tok, text)
    model = small_llama(len(tok), a["size"], max_positions=max(512, 2 * a["seq_len"]), seed=a["seed"])
    bar, tick = loss_bar(cfg.steps, f"pretrain ({'PausePT' if cfg.pause_rate else 'StdPT'})")
    with bar:
        hist = train(model, tok, cfg, stream=stream, run_dir=out, resume=args.resume, progress=tick,
                     stop_after=args.stop_after)
    if not is_main_process():
        return 0
    if args.json:
        print_json({"model": str((out / "model").resolve()), "tokenizer": str((out / "tokenizer").resolve()),
                    "out": str(out.resolve()), **_losses(hist), "parameters": hist["parameters"],
                    "tokens": len(stream), **{k: a[k] for k in a if k != "checkpoint_every"}, "resumed": args.resume})
        return 0
    print(f"pretrained {hist['parameters']:,} parameters on {len(stream):,} tokens; final loss "
          f"{sum(hist['losses'][-20:]) / len(hist['losses'][-20:]):.3f}; model in {out / 'model'}")
    return 0


def _losses(hist: dict) -> dict:
    """The first step's loss and the mean of the last 20 (what the text output calls the final loss)."""
    losses = hist["losses"]
    return {"steps": len(losses), "loss_first": losses[0] if losses else None,
            "loss_last": sum(losses[-20:]) / len(losses[-20:]) if losses else None}


def _load(source: str, device=None, dtype=None):
    from tenfold.models.finetune import load_model

    return load_model(source, device=device, dtype=dtype)


def _finetune(args) -> int:
    from tenfold.models.finetune import is_main_process
    from tenfold.pause.tasks import split
    from tenfold.pause.training import TrainConfig, encode_pairs, train

    a = _run_args(args, ["model", "task", "m_ft", "n_train", "steps", "batch_size", "lr", "seed", "checkpoint_every"])
    cfg = TrainConfig(steps=a["steps"], batch_size=a["batch_size"], lr=a["lr"], m_ft=a["m_ft"], seed=a["seed"],
                      checkpoint_every=a["checkpoint_every"])
    cfg.check()
    import torch

    model, tok = _load(a["model"], dtype=torch.float32)  # float32 master weights; accelerate places the model
    pairs = [p for t in a["task"] for p in split(t, a["n_train"], 1, a["seed"])[0]]
    _record(args, a)
    bar, tick = loss_bar(cfg.steps, f"finetune ({'PauseFT, M_ft=' + str(cfg.m_ft) if cfg.m_ft else 'StdFT'})")
    with bar:
        hist = train(model, tok, cfg, pairs=encode_pairs(tok, pairs), run_dir=args.out, resume=args.resume,
                     progress=tick, stop_after=args.stop_after)
    meta = {"m_ft": cfg.m_ft, "tasks": a["task"], "source": a["model"]}
    if not is_main_process():
        return 0
    (Path(args.out) / "model" / "pause.json").write_text(json.dumps(meta))
    if args.json:
        out = Path(args.out).resolve()
        print_json({"model": str(out / "model"), "out": str(out), **_losses(hist), "parameters": hist["parameters"],
                    "examples": len(pairs), "source": a["model"], "tasks": a["task"],
                    **{k: a[k] for k in a if k not in ("model", "task", "checkpoint_every")}, "resumed": args.resume})
        return 0
    print(f"fine-tuned on {', '.join(a['task'])} with M_ft={cfg.m_ft}; final loss "
          f"{sum(hist['losses'][-20:]) / len(hist['losses'][-20:]):.3f}; model in {Path(args.out) / 'model'}")
    return 0


def _eval(args) -> int:
    from tenfold.pause.evaluate import predict
    from tenfold.pause.tasks import split

    model, tok = _load(args.model, args.device)
    if args.n < 1:
        raise TenfoldError("--n must be at least 1")
    meta_path = Path(args.model) / "model" / "pause.json"
    if not meta_path.exists():
        meta_path = Path(args.model) / "pause.json"
    m_ft = json.loads(meta_path.read_text())["m_ft"] if meta_path.exists() else 0
    sweep = args.m_inf if args.m_inf else [m_ft]
    results = {}
    for task in args.task:
        _, test = split(task, 2000, args.n, 0)
        results[task] = {}
        for m_inf in sweep:
            preds = predict(model, tok, [p for p, _ in test], m_inf)
            results[task][m_inf] = sum(p.strip() == a for p, (_, a) in zip(preds, test)) / len(test)
            if args.show and not args.json:
                for (prompt, answer), pred in list(zip(test, preds))[: args.show]:
                    print(f"  [{task}, M_inf={m_inf}] {prompt} -> {pred.strip()!r} (expected {answer!r})")
    if args.json:
        print_json({"model": args.model, "m_ft": m_ft, "n": args.n, "accuracy": results})
    else:
        for task, row in results.items():
            print(f"{task:8s} " + "  ".join(f"M_inf={m}: {acc:.3f}" for m, acc in row.items()))
    return 0
