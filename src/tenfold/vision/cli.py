"""``tenfold vision world|parse``: render the procedural visual world, read images back into objects."""
from __future__ import annotations

from pathlib import Path

from tenfold.argtypes import add_training_args, directory, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import progress_bar


def add_commands(sub) -> None:
    from tenfold.argtypes import image_size, positive_int
    from tenfold.vision.world import SPLITS

    p = sub.add_parser("vision", help="the visual world, a small CLIP and a small VLM (world | parse | train-clip | train-vlm | ask)")
    verbs = p.add_subparsers(dest="vision_verb", required=True, metavar="{world,parse,train-clip,train-vlm,ask}")
    w = verbs.add_parser("world", help="render N scenes as PNG files with scenes.jsonl (descriptions, captions)")
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--out", type=directory, required=True)
    w.add_argument("--split", choices=SPLITS, default="train",
                   help="train/test: no held-out (colour, shape) pair; unseen: at least one")
    w.add_argument("--size", type=image_size, default=64, help="image width and height in pixels (default 64)")
    w.add_argument("--seed", type=random_seed, default=0)
    w.add_argument("--force", action="store_true", help="replace what --out already holds")
    w.add_argument("--json", action="store_true", help="print the folder, scenes.jsonl, scene count, split, size and "
                                                       "seed as JSON")
    w.set_defaults(func=_world)
    q = verbs.add_parser("parse", help="read a rendered image back into objects")
    q.add_argument("image")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_parse)
    c = verbs.add_parser("train-clip", help="train a small CLIP contrastively on the world (or load a real one)")
    c.add_argument("--out", type=directory, required=True, help="directory for the model and tokenizer")
    c.add_argument("--steps", type=int, default=600)
    c.add_argument("--batch-size", type=int, default=64)
    c.add_argument("--lr", type=float, default=1e-3)
    c.add_argument("--seed", type=random_seed, default=0)
    c.add_argument("--from-pretrained", default=None,
                   help="a local CLIP checkpoint (transformers format) to evaluate/fine-tune instead of a new one")
    c.add_argument("--n-test", type=int, default=200, help="held-out scenes for recall@k")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=_train_clip)
    v = verbs.add_parser("train-vlm", help="train a small vision-language model (CLIP image encoder + projector + LM)")
    v.add_argument("--clip", required=True, help="a CLIP directory from `tenfold vision train-clip` (or a real CLIP)")
    v.add_argument("--out", type=directory, required=True, help="directory for the VLM (vision tower, projector, tokenizer)")
    v.add_argument("--model", default=None, help="the language model (default: the bundled SmolLM2-135M-Instruct)")
    v.add_argument("--steps", type=int, default=300)
    v.add_argument("--batch-size", type=int, default=16)
    v.add_argument("--lr", type=float, default=1e-3)
    v.add_argument("--image-tokens", type=int, default=16, help="LM positions per image (a square number)")
    v.add_argument("--freeze-vision", action="store_true", help="train the projector only")
    v.add_argument("--lora-rank", type=int, default=0, help="LoRA adapters of this rank on the LM's attention (0: LM frozen)")
    v.add_argument("--seed", type=random_seed, default=0)
    add_training_args(v, checkpoint_every_default=0, checkpoint_every_type=int,
                      checkpoint_every_help="save a resumable checkpoint every N steps",
                      resume_help="continue the interrupted run in --out", stop_after=False)
    v.add_argument("--n-test", type=int, default=100, help="held-out questions per split (test, unseen)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=_train_vlm)
    a = verbs.add_parser("ask", help="ask a trained VLM about one or more images")
    a.add_argument("image", nargs="+", help="image file(s), then the question as the last argument")
    a.add_argument("--vlm", required=True, help="directory from `tenfold vision train-vlm`")
    a.add_argument("--max-tokens", type=positive_int, default=48)
    from tenfold.argtypes import add_device_arg

    add_device_arg(a)
    a.add_argument("--json", action="store_true")
    a.set_defaults(func=_ask)


def _world(args) -> int:
    from tenfold.vision.world import write_dataset

    if args.size < 32:
        raise TenfoldError(f"--size must be at least 32 (got {args.size})")
    with progress_bar(transient=True) as bar:
        job = bar.add_task(f"rendering {args.split}", total=args.n)
        out = write_dataset(args.out, args.n, args.split, args.size, args.seed,
                            progress=lambda i, n: bar.update(job, completed=i), force=args.force)
    if args.json:
        print_json({"out": str(out), "scenes_file": str(out / "scenes.jsonl"), "scenes": args.n, "split": args.split,
                    "size": args.size, "seed": args.seed})
    else:
        print(f"{args.n} {args.split} scenes ({args.size}x{args.size}) -> {out} (scenes.jsonl has descriptions and "
              "captions)")
    return 0


def read_image(path: str | Path):
    """A PIL image from a file, or one clear error."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise TenfoldError(f"no image at {path}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise TenfoldError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    return image.convert("RGB")


def _parse(args) -> int:
    from tenfold.vision.world import parse

    scene = parse(read_image(args.image))
    if args.json:
        print_json(scene.to_dict())
    else:
        print(scene.description() or "no objects found")
    return 0


def _train_clip(args) -> int:
    from tenfold.vision.clip import retrieval_recall, small_clip, train_clip, world_tokenizer, zero_shot_attributes
    from tenfold.vision.world import scenes

    out = Path(args.out)
    if (out / "config.json").exists():
        raise TenfoldError(f"{out} already holds a model; choose another --out")
    if args.from_pretrained:
        from transformers import AutoTokenizer, CLIPModel

        src = Path(args.from_pretrained)
        if not (src / "config.json").exists():
            raise TenfoldError(f"no CLIP checkpoint in {src} (expected config.json)")
        model, tok = CLIPModel.from_pretrained(src), AutoTokenizer.from_pretrained(src)
        image_size = model.config.vision_config.image_size
    else:
        tok = world_tokenizer()
        model, image_size = small_clip(len(tok), seed=args.seed), 64
    with progress_bar("CLIP", fields=("loss",)) as bar:  # on stderr: --json keeps it
        job = bar.add_task("clip", total=args.steps, loss="-")
        losses = train_clip(model, tok, args.steps, args.batch_size, args.lr, args.seed, image_size,
                            progress=lambda i, n, loss: bar.update(job, completed=i, loss=f"{loss:.3f}"))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    result = {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]),
              "recall (held-out test)": retrieval_recall(model, tok, scenes(args.n_test, "test"), image_size=image_size),
              "recall (unseen pairs)": retrieval_recall(model, tok, scenes(args.n_test, "unseen"), image_size=image_size),
              "zero-shot": zero_shot_attributes(model, tok, image_size=image_size)}
    if args.json:
        print_json(result)
    else:
        print(f"CLIP trained: loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}; saved to {out}")
        for key in ("recall (held-out test)", "recall (unseen pairs)", "zero-shot"):
            print(f"  {key}: " + ", ".join(f"{k} {v:.3f}" for k, v in result[key].items()))
    return 0


def _train_vlm(args) -> int:
    from transformers import CLIPModel

    from tenfold.models.finetune import check_run_dir, write_json
    from tenfold.vision.questions import KINDS
    from tenfold.vision.vlm import build_vlm, train_vlm
    from tenfold.vision.vlm_eval import summarise

    out = Path(args.out)
    if (out / "vlm.json").exists():
        raise TenfoldError(f"{out} already holds a VLM; choose another --out")
    check_run_dir(out, args.resume)
    clip_dir = Path(args.clip)
    if not (clip_dir / "config.json").exists():
        raise TenfoldError(f"no CLIP model in {clip_dir} (expected config.json; make one with `tenfold vision train-clip`)")
    try:
        clip = CLIPModel.from_pretrained(clip_dir)
    except (OSError, ValueError) as exc:
        raise TenfoldError(f"cannot load the CLIP model in {clip_dir}: {str(exc).splitlines()[0]}") from None
    if args.lora_rank < 0:
        raise TenfoldError("--lora-rank must be >= 0")
    vlm = build_vlm(clip, args.model, args.image_tokens, train_vision=not args.freeze_vision, lora_rank=args.lora_rank)
    with progress_bar("VLM", fields=("info",)) as bar:  # on stderr: --json keeps it
        job = bar.add_task("train", total=args.steps, info="")
        losses = train_vlm(vlm, args.steps, args.batch_size, args.lr, KINDS, args.seed, run_dir=out, resume=args.resume,
                           checkpoint_every=args.checkpoint_every,
                           progress=lambda i, n, loss: bar.update(job, completed=i, info=f"loss {loss:.3f}"))
        vlm.save(out)
        evals = {}
        for split in ("test", "unseen"):
            task = bar.add_task(f"eval {split}", total=args.n_test, info=split)
            evals[split] = summarise(vlm, split, args.n_test, progress=lambda i, n, t=task: bar.update(t, completed=i))
    result = {"loss_first": losses[0], "loss_last": sum(losses[-10:]) / len(losses[-10:]), "accuracy": evals}
    write_json(out / "eval.json", result)
    if args.json:
        print_json(result)
    else:
        print(f"VLM trained: loss {result['loss_first']:.3f} -> {result['loss_last']:.3f}; saved to {out}")
        for split, acc in evals.items():
            print(f"  {split}: " + ", ".join(f"{k} {v:.2f}" for k, v in acc.items()))
    return 0


def _ask(args) -> int:
    from tenfold.vision.vlm import VisionLanguageModel

    if len(args.image) < 2:
        raise TenfoldError("give at least one image and then the question, e.g. tenfold vision ask scene.png "
                           "\"What colour is the star?\" --vlm DIR")
    *paths, question = args.image
    if not question.strip():
        raise TenfoldError("the question is empty")
    images = [read_image(p) for p in paths]
    vlm = VisionLanguageModel.load(args.vlm, device=args.device)
    answer = vlm.ask(images, question, max_new_tokens=args.max_tokens)
    print_json({"answer": answer}) if args.json else print(answer)
    return 0
