"""``tenfold kosmos-g train|generate``: build a miniature Kosmos-G, and generate images from interleaved prompts."""
from __future__ import annotations

import json
from pathlib import Path

from tenfold.argtypes import directory, image_size, random_seed
from tenfold.errors import TenfoldError
from tenfold.jsonout import print_json
from tenfold.progress import progress_bar


def add_commands(sub) -> None:
    p = sub.add_parser("kosmos-g", help="Kosmos-G: images from prompts that interleave text and subject images "
                                        "(train | generate)")
    verbs = p.add_subparsers(dest="kosmos_verb", required=True, metavar="{train,generate}")

    t = verbs.add_parser("train", help="train the foundation (CLIP, U-Net, MLLM; cached) and AlignerNet's two stages")
    t.add_argument("--out", type=directory, required=True, help="directory for the assembled model")
    t.add_argument("--clip-steps", type=int, default=300)
    t.add_argument("--decoder-steps", type=int, default=300, help="U-Net training steps (the slow part)")
    t.add_argument("--vlm-steps", type=int, default=100, help="MLLM instruction-tuning steps (0: projector untrained)")
    t.add_argument("--lora-rank", type=int, default=16, help="the MLLM's LoRA rank (0: none)")
    t.add_argument("--align-steps", type=int, default=150, help="AlignerNet stage 1: captions, MSE to CLIP")
    t.add_argument("--instruct-steps", type=int, default=150,
                   help="AlignerNet stage 2: compositional instructions, diffusion loss through the frozen U-Net")
    t.add_argument("--freeze-mllm", action="store_true",
                   help="instruction tuning trains AlignerNet only (default: the MLLM's projector, vision tower and "
                        "LoRA too, as in the paper)")
    t.add_argument("--caption-anchor", type=float, default=1.0, metavar="W",
                   help="add W x MSE to CLIP's encoding of the target caption to the instruction loss (not in the "
                        "paper, which uses the diffusion loss alone: W = 0; a stronger signal for small budgets)")
    t.add_argument("--seed", type=random_seed, default=0)
    t.add_argument("--no-cache", action="store_true", help="retrain the foundation even if a cached one matches")
    t.add_argument("--n-test", type=int, default=30, help="held-out instructions scored after training (0: none)")
    t.add_argument("--json", action="store_true")
    t.set_defaults(func=_train)

    g = verbs.add_parser("generate", help="generate an image from a prompt with <image> placeholders")
    g.add_argument("--model", required=True, help="directory from `tenfold kosmos-g train`")
    g.add_argument("--prompt", required=True, help='e.g. "<image> and <image> side by side", "<image>, <image> '
                                                   'and <image> in a row" or "the <image> shape, in green"')
    g.add_argument("--image", action="append", default=[], help="a subject image per <image>, in order (repeat)")
    g.add_argument("--out", required=True, help="PNG file to write (with --n > 1: NAME-0.png, NAME-1.png, ...)")
    g.add_argument("--n", type=int, default=1, help="images to generate (different seeds)")
    g.add_argument("--steps", type=int, default=25, help="DDIM sampling steps")
    g.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance scale")
    g.add_argument("--seed", type=random_seed, default=0)
    g.add_argument("--size", type=image_size, default=128,
                   help="side of the saved image in pixels, 32 to 4096 (nearest-neighbour upscaling)")
    from tenfold.argtypes import add_device_arg

    add_device_arg(g, help="where CLIP, the MLLM, AlignerNet and the U-Net run: auto (a GPU when torch sees one, else "
                           "the CPU), cpu, cuda or cuda:N (the start noise is drawn on the CPU: same seed, same noise)")
    g.add_argument("--text-only", action="store_true",
                   help="condition on the CLIP text encoder instead of the aligned MLLM (no images)")
    g.add_argument("--json", action="store_true", help="print the images written and the settings as JSON")
    g.set_defaults(func=_generate)


def _train(args) -> int:
    from tenfold.kosmos_g.evaluate import generate_all, score_all
    from tenfold.kosmos_g.model import CONFIG, KosmosG
    from tenfold.kosmos_g.pipeline import FoundationSettings, foundation, train_aligner

    out = Path(args.out)
    if (out / CONFIG).exists():
        raise TenfoldError(f"{out} already holds a Kosmos-G model; choose another --out")
    if args.clip_steps < 1 or args.decoder_steps < 1:
        raise TenfoldError("--clip-steps and --decoder-steps must be >= 1")
    if args.vlm_steps < 0 or args.n_test < 0 or args.lora_rank < 0 or not 0 <= args.caption_anchor < float("inf"):
        raise TenfoldError("--vlm-steps, --lora-rank and --n-test must be >= 0 and --caption-anchor finite and >= 0")
    if args.align_steps < 0 or args.instruct_steps < 0 or args.align_steps + args.instruct_steps == 0:
        raise TenfoldError("train at least one aligner stage (--align-steps / --instruct-steps >= 1)")
    settings = FoundationSettings(clip_steps=args.clip_steps, decoder_steps=args.decoder_steps,
                                  vlm_steps=args.vlm_steps, lora_rank=args.lora_rank, seed=args.seed)
    with progress_bar("Kosmos-G", fields=("info",)) as bar:  # on stderr: --json keeps it
        jobs = {}

        def progress(label, i, n, loss):
            if label not in jobs:
                jobs[label] = bar.add_task(label, total=n, info="")
            bar.update(jobs[label], completed=i, info=f"{label} loss {loss:.3f}")

        clip, tok, decoder, vlm, info = foundation(settings, cache=not args.no_cache, progress=progress)
        model = KosmosG.assemble(clip, tok, decoder, vlm, seed=args.seed)
        losses = train_aligner(model, args.align_steps, args.instruct_steps, seed=args.seed, progress=progress,
                               train_mllm=not args.freeze_mllm, anchor_weight=args.caption_anchor)
    result = {"foundation": info["source"], "align_loss_last": losses["align"][-1] if losses["align"] else None,
              "instruct_loss_last": losses["instruct"][-1] if losses["instruct"] else None}
    model.save(out, {"foundation": info["settings"], "align_steps": args.align_steps,
                     "instruct_steps": args.instruct_steps, "mllm_trained": not args.freeze_mllm,
                     "caption_anchor": args.caption_anchor, "seed": args.seed})
    if args.n_test:
        scores = score_all(model, generate_all(model, "test", args.n_test, steps=25))
        result["held-out"] = {m: {k: v for k, v in s.items() if k not in ("per task", "per image")} for m, s in scores.items()}
        (out / "eval.json").write_text(json.dumps(scores, indent=1))
    if args.json:
        print_json(result)
        return 0
    print(f"Kosmos-G saved to {out} (foundation {result['foundation']})")
    for name, scores in result.get("held-out", {}).items():
        print(f"  {name}: " + ", ".join(f"{k} {v}" for k, v in scores.items()))
    return 0


def _generate(args) -> int:
    from tenfold.kosmos_g.model import KosmosG
    from tenfold.vision.cli import read_image
    from tenfold.vision.vlm import IMAGE_TOKEN

    if not args.prompt.strip():
        raise TenfoldError("the prompt is empty")
    if args.n < 1 or args.steps < 1:
        raise TenfoldError("--n and --steps must be >= 1")
    if args.text_only and args.image:
        raise TenfoldError("--text-only takes no --image (the CLIP text encoder cannot read images)")
    images = [read_image(p) for p in args.image]
    wanted = args.prompt.count(IMAGE_TOKEN)
    if not args.text_only and wanted != len(images):  # before the (slow) model load
        raise TenfoldError(f"the prompt has {wanted} {IMAGE_TOKEN} placeholder(s) but {len(images)} --image(s) were "
                           "given")
    model = KosmosG.load(args.model, device=args.device)
    kw = {"steps": args.steps, "guidance": args.guidance, "seed": args.seed, "size": args.size}
    if args.text_only:
        outs = model.generate_from_text([args.prompt] * args.n, **kw)
    else:
        outs = model.generate([args.prompt] * args.n, [images] * args.n, **kw)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    paths = [target] if args.n == 1 else [target.with_name(f"{target.stem}-{k}{target.suffix or '.png'}")
                                          for k in range(args.n)]
    for image, path in zip(outs, paths):
        image.save(path, format="PNG")
    if args.json:
        from tenfold.devices import resolve_device

        print_json({"images": [str(p.resolve()) for p in paths], "model": str(Path(args.model).resolve()),
                    "prompt": args.prompt, "subjects": [str(Path(p).resolve()) for p in args.image],
                    "text_only": args.text_only, **kw, "n": args.n, "device": str(resolve_device(args.device))})
    else:
        print("\n".join(str(p) for p in paths))
    return 0
