"""``tenfold vision world|parse``: render the procedural visual world, read images back into objects."""
from __future__ import annotations

import json
from pathlib import Path

from tenfold.errors import TenfoldError


def add_commands(sub) -> None:
    from tenfold.vision.world import SPLITS

    p = sub.add_parser("vision", help="the procedural visual world (world | parse)")
    verbs = p.add_subparsers(dest="vision_verb", required=True, metavar="{world,parse}")
    w = verbs.add_parser("world", help="render N scenes as PNG files with scenes.jsonl (descriptions, captions)")
    w.add_argument("--n", type=int, required=True)
    w.add_argument("--out", required=True)
    w.add_argument("--split", choices=SPLITS, default="train",
                   help="train/test: no held-out (colour, shape) pair; unseen: at least one")
    w.add_argument("--size", type=int, default=64, help="image width and height in pixels (default 64)")
    w.add_argument("--seed", type=int, default=0)
    w.set_defaults(func=_world)
    q = verbs.add_parser("parse", help="read a rendered image back into objects")
    q.add_argument("image")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_parse)


def _world(args) -> int:
    from rich.progress import Progress

    from tenfold.vision.world import write_dataset

    if args.size < 32:
        raise TenfoldError(f"--size must be at least 32 (got {args.size})")
    with Progress(transient=True) as bar:
        job = bar.add_task(f"rendering {args.split}", total=args.n)
        out = write_dataset(args.out, args.n, args.split, args.size, args.seed,
                            progress=lambda i, n: bar.update(job, completed=i))
    print(f"{args.n} {args.split} scenes ({args.size}x{args.size}) -> {out} (scenes.jsonl has descriptions and captions)")
    return 0


def _parse(args) -> int:
    from PIL import Image, UnidentifiedImageError

    from tenfold.vision.world import parse

    path = Path(args.image)
    if not path.is_file():
        raise TenfoldError(f"no image at {path}")
    try:
        image = Image.open(path)
        image.load()
    except (UnidentifiedImageError, OSError) as exc:
        raise TenfoldError(f"{path} is not a readable image ({exc.__class__.__name__})") from None
    scene = parse(image)
    if args.json:
        print(json.dumps(scene.to_dict()))
    else:
        print(scene.description() or "no objects found")
    return 0
