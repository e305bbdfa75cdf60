"""``tenfold radit data|train-lm|train-retriever|eval``: RA-DIT's two fine-tuning stages and their evaluation."""
from __future__ import annotations

from pathlib import Path

from tenfold.argtypes import add_training_args, directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import loss_bar


def add_commands(sub) -> None:
    p = sub.add_parser("radit", help="RA-DIT: fine-tune the LM to use retrieval and the retriever to serve the LM")
    verbs = p.add_subparsers(dest="radit_verb", required=True, metavar="{data,train-lm,train-retriever,eval}")
    d = verbs.add_parser("data", help="render the QA corpus from real tables (countries, cities, films)")
    d.add_argument("--out", type=directory, required=True, help="directory for dataset.json")
    d.add_argument("--cities", type=int, default=2000)
    d.add_argument("--films", type=int, default=2000)
    d.add_argument("--json", action="store_true",
                   help="print the dataset file, passage and question counts (by split and kind) as JSON")
    d.set_defaults(func=_data)

    def common(q):
        q.add_argument("--data", required=True, help="a directory written by `tenfold radit data`")
        q.add_argument("--model", default=None, help="the LM (default: the bundled SmolLM2)")
        q.add_argument("--n-train", type=int, default=500, help="training questions (stratified by kind)")
        q.add_argument("--seed", type=random_seed, default=0)

    t = verbs.add_parser("train-lm", help="LM-ft: one example per retrieved chunk, loss on the answer (LoRA)")
    common(t)
    t.add_argument("--out", type=directory, required=True)
    t.add_argument("--k", type=int, default=3, help="retrieved chunks per question (default 3)")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=3e-4)
    t.add_argument("--lora-r", type=int, default=8, help="LoRA rank (0 = full fine-tuning)")
    add_training_args(t, checkpoint_every_default=50)
    t.add_argument("--json", action="store_true",
                   help="print the model path, steps, loss_first, loss_last and settings as JSON (progress on stderr)")
    t.set_defaults(func=_train_lm)

    r = verbs.add_parser("train-retriever", help="R-ft: fit the query encoder to LM-supervised retrieval targets")
    common(r)
    r.add_argument("--out", type=directory, required=True)
    r.add_argument("--k", type=int, default=5, help="candidate chunks per question for the LSR target")
    r.add_argument("--steps", type=int, default=200)
    r.add_argument("--batch-size", type=int, default=16)
    r.add_argument("--lr", type=float, default=2e-5)
    r.add_argument("--tau", type=float, default=1.0, help="LSR temperature")
    r.add_argument("--tau-r", type=float, default=0.05, help="retriever temperature")
    r.add_argument("--resume", action="store_true", help="reuse the LSR targets already computed in --out")
    r.add_argument("--json", action="store_true",
                   help="print the query encoder path, steps, kl_first, kl_last and settings as JSON (progress on "
                        "stderr)")
    r.set_defaults(func=_train_retriever)

    e = verbs.add_parser("eval", help="held-out accuracy and retriever recall@k")
    e.add_argument("--data", required=True)
    e.add_argument("--lm", default=None, help="a train-lm run directory or an LM name/path (default: bundled)")
    e.add_argument("--retriever", default=None, help="a train-retriever run directory (default: MiniLM as is)")
    e.add_argument("--mode", choices=["replug", "concat", "closed"], default="replug")
    from tenfold.argtypes import add_device_arg

    add_device_arg(e, help="where the LM and the retriever run: auto (a GPU when torch sees one, else the CPU), cpu, "
                           "cuda or cuda:N (the LM is evaluated in bfloat16 on every device)")
    e.add_argument("--k", type=int, default=3)
    e.add_argument("--n", type=int, default=120, help="test questions (stratified by kind)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_eval)


def _dataset(path: str):
    from tenfold.radit.data import Dataset

    return Dataset.load(Path(path) / "dataset.json" if Path(path).is_dir() else path)


def _data(args) -> int:
    from collections import Counter

    from tenfold.radit.data import build

    if args.cities < 0 or args.films < 0:
        raise TenfoldError("--cities and --films must be >= 0")
    ds = build(args.cities, args.films)
    path = ds.save(Path(args.out) / "dataset.json")
    counts = Counter((q.split, q.kind) for q in ds.questions)
    if args.json:
        by_split = {split: {kind: n for (s, kind), n in sorted(counts.items()) if s == split}
                    for split in ("train", "dev", "test")}
        print_json({"dataset": str(Path(path).resolve()), "passages": len(ds.passages),
                    "questions": len(ds.questions), "by_split": by_split, "cities": args.cities, "films": args.films})
        return 0
    print(f"{len(ds.passages)} passages, {len(ds.questions)} questions -> {path}")
    for split in ("train", "dev", "test"):
        print(f"  {split:5s} " + ", ".join(f"{kind} {n}" for (s, kind), n in sorted(counts.items()) if s == split))
    return 0


def _retriever(ds, device=None):
    from tenfold import home
    from tenfold.radit.retriever import DualEncoder
    from tenfold.retrieval import Embedder

    return DualEncoder(ds.passages, Embedder(device=device), cache_dir=f"{home()}/radit")


def _sample(questions, n: int, seed: int):
    from tenfold.radit.data import stratified

    if n < 1:
        raise TenfoldError("the number of questions must be at least 1")
    kinds = sorted({q.kind for q in questions})
    return stratified(questions, max(1, n // len(kinds)), seed)


def _load_lm(source: str | None, device=None):
    import torch

    from tenfold.models.finetune import load_model

    # float32 weights on every device unless evaluating: training keeps float32 master weights (accelerate's
    # mixed precision casts the compute); eval passes its --device and casts to bfloat16 itself
    return load_model(source, device=device, dtype=torch.float32)


def _train_lm(args) -> int:
    from tenfold.models.finetune import check_run_dir
    from tenfold.radit.lm_ft import finetune_lm, lm_ft_examples

    check_run_dir(args.out, args.resume)
    if args.k < 1:
        raise TenfoldError("--k must be at least 1")
    ds = _dataset(args.data)
    train = _sample(ds.split("train"), args.n_train, args.seed)
    model, tok = _load_lm(args.model)
    hits = _retriever(ds).search([q.question for q in train], args.k)
    examples = lm_ft_examples(tok, train, hits, ds.passages, args.k)
    bar, tick = loss_bar(args.steps, f"LM-ft ({len(examples)} examples)")
    with bar:
        _, losses = finetune_lm(model, tok, examples, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                                lora_r=args.lora_r, seed=args.seed, run_dir=args.out, resume=args.resume,
                                checkpoint_every=args.checkpoint_every, progress=tick, stop_after=args.stop_after)
    from tenfold.models.finetune import is_main_process
    from tenfold.models.lm import DEFAULT_LM

    if not is_main_process():  # under `accelerate launch`, the main process reports
        return 0
    if args.json:
        out = Path(args.out).resolve()
        print_json({"model": str(out / "model"), "out": str(out), "steps": len(losses), "loss_first": losses[0],
                    "loss_last": sum(losses[-10:]) / len(losses[-10:]), "examples": len(examples),
                    "questions": len(train), "lm": args.model or DEFAULT_LM, "k": args.k, "batch_size": args.batch_size,
                    "lr": args.lr, "lora_r": args.lora_r, "seed": args.seed, "resumed": args.resume})
        return 0
    print(f"LM-ft done: loss {losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f}; model in {args.out}/model")
    return 0


def _train_retriever(args) -> int:
    import numpy as np

    from tenfold.radit.reader import answer_ids, answer_logprob, prompt_ids
    from tenfold.radit.retriever import lsr_distribution, train_query_encoder

    out = Path(args.out)
    targets_path = out / "lsr.npz"
    if args.resume and not targets_path.exists():
        raise TenfoldError(f"nothing to resume in {out} (no lsr.npz)")
    if not args.resume and (out / "query_encoder").exists():
        raise TenfoldError(f"{out} already holds a trained retriever; pass --resume or choose another --out")
    if args.k < 2:
        raise TenfoldError("--k must be at least 2 (the LSR target compares chunks)")
    ds = _dataset(args.data)
    train = _sample(ds.split("train"), args.n_train, args.seed)
    retriever = _retriever(ds)
    questions = [q.question for q in train]
    if args.resume:
        saved = np.load(targets_path)
        candidates, loglik = saved["candidates"], saved["loglik"]
    else:
        import torch

        model, tok = _load_lm(args.model)
        model = model.to(torch.bfloat16)
        candidates = np.array([[i for i, _ in h] for h in retriever.search(questions, args.k)])
        prompts = [prompt_ids(tok, q.question, [ds.passages[i]]) for q, row in zip(train, candidates) for i in row]
        answers = [answer_ids(tok, q.answer) for q in train for _ in range(args.k)]
        from rich.progress import track

        loglik = []
        for i in track(range(0, len(prompts), 64), description="LSR targets (LM log-likelihoods)"):
            loglik.extend(answer_logprob(model, tok, prompts[i:i + 64], answers[i:i + 64]))
        loglik = np.asarray(loglik).reshape(len(train), args.k)
        out.mkdir(parents=True, exist_ok=True)
        np.savez(targets_path, candidates=candidates, loglik=loglik)
    targets = lsr_distribution(loglik, args.tau)
    bar, tick = loss_bar(args.steps, "R-ft (query encoder)")
    with bar:
        losses = train_query_encoder(retriever, questions, candidates, targets, steps=args.steps,
                                     batch_size=args.batch_size, lr=args.lr, tau_r=args.tau_r, seed=args.seed,
                                     progress=tick)
    retriever.save_query_encoder(out / "query_encoder")
    if args.json:
        from tenfold.models.lm import DEFAULT_LM

        print_json({"query_encoder": str((out / "query_encoder").resolve()), "out": str(out.resolve()),
                    "lsr_targets": str(targets_path.resolve()), "steps": len(losses), "kl_first": losses[0],
                    "kl_last": sum(losses[-10:]) / len(losses[-10:]), "questions": len(train),
                    "lm": args.model or DEFAULT_LM, "k": args.k, "batch_size": args.batch_size, "lr": args.lr,
                    "tau": args.tau, "tau_r": args.tau_r, "seed": args.seed, "resumed": args.resume})
        return 0
    print(f"R-ft done: KL {losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f}; query encoder in "
          f"{out / 'query_encoder'}")
    return 0


def _eval(args) -> int:
    import numpy as np
    import torch

    from tenfold.radit.data import is_correct
    from tenfold.radit.reader import ensemble_weights, prompt_ids, replug_generate
    from tenfold.radit.retriever import recall_at_k

    if args.k < 1:
        raise TenfoldError("--k must be at least 1")
    ds = _dataset(args.data)
    test = _sample(ds.split("test"), args.n, 0)
    retriever = _retriever(ds, args.device)
    if args.retriever:
        retriever.load_query_encoder(Path(args.retriever) / "query_encoder")
    model, tok = _load_lm(args.lm, args.device)
    model = model.to(torch.bfloat16)
    hits = retriever.search([q.question for q in test], args.k)
    if args.mode == "closed":
        groups, weights = [[prompt_ids(tok, q.question)] for q in test], [[1.0]] * len(test)
    elif args.mode == "concat":
        groups = [[prompt_ids(tok, q.question, [ds.passages[i] for i, _ in h])] for q, h in zip(test, hits)]
        weights = [[1.0]] * len(test)
    else:
        groups = [[prompt_ids(tok, q.question, [ds.passages[i]]) for i, _ in h] for q, h in zip(test, hits)]
        weights = [ensemble_weights([s for _, s in h]) for h in hits]
    preds = replug_generate(model, tok, groups, weights, max_new_tokens=16)
    right = [is_correct(p, q.answer) for p, q in zip(preds, test)]
    kinds = {k: float(np.mean([r for r, q in zip(right, test) if q.kind == k])) for k in sorted({q.kind for q in test})}
    result = {"mode": args.mode, "k": args.k, "n": len(test), "accuracy": float(np.mean(right)), "by_kind": kinds,
              "recall@k": recall_at_k(hits, [q.passage for q in test], args.k)}
    if args.json:
        print_json(result)
    else:
        print(f"accuracy {result['accuracy']:.3f} on {len(test)} held-out questions ({args.mode}, k={args.k}); "
              f"retriever recall@{args.k} {result['recall@k']:.3f}")
        for kind, acc in kinds.items():
            print(f"  {kind:14s} {acc:.3f}")
    return 0
