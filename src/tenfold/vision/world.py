"""A procedural visual world: scenes of coloured shapes, their descriptions, captions, and an exact parser.

The multimodal systems of the seed week (Kosmos-G, the GPT-4V exploration) need image data with ground truth.
No image datasets or checkpoints are available offline, so tenfold generates its own world: one to four
objects (shape, colour, size) placed in distinct cells of a 3 x 3 grid (with a little jitter) on a plain
background, rendered with PIL. Every scene has a structured description, several natural captions, and
relations between objects (left of / right of / above / below). Some (colour, shape) pairs are held out of
the training split, for compositional tests. :func:`parse` reads a rendered image back into objects by
matching each cell's pixels against rendered templates, so generated images can be scored exactly.
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from tenfold.errors import TenfoldError
from tenfold.staging import staged_folder

SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 90, 230), "yellow": (240, 210, 40),
           "purple": (150, 60, 200), "orange": (245, 140, 30), "white": (245, 245, 245)}
BACKGROUNDS = {"black": (0, 0, 0), "gray": (90, 90, 90), "navy": (15, 20, 60)}
SIZES = ("small", "large")
GRID = 3
# (colour, shape) pairs never shown in training: one colour per shape, a different one each time
HELD_OUT = frozenset({("red", "triangle"), ("green", "star"), ("blue", "circle"), ("yellow", "square"),
                      ("purple", "diamond"), ("orange", "cross")})
SPLITS = ("train", "test", "unseen")
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}


@dataclass(frozen=True)
class Obj:
    shape: str
    colour: str
    size: str
    row: int  # grid cell, 0 = top
    col: int  # grid cell, 0 = left
    dx: int = 0  # jitter in pixels at 64 x 64 (scaled with the image)
    dy: int = 0

    def phrase(self) -> str:
        return f"a {self.size} {self.colour} {self.shape}"


@dataclass
class Scene:
    objects: list[Obj]
    background: str = "black"
    seed: int = 0
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"objects": [asdict(o) for o in self.objects], "background": self.background, "seed": self.seed}

    @classmethod
    def from_dict(cls, d: dict) -> "Scene":
        try:
            return cls([Obj(**o) for o in d["objects"]], d.get("background", "black"), d.get("seed", 0))
        except (KeyError, TypeError) as exc:
            raise TenfoldError(f"not a scene description ({exc})") from None

    def relations(self) -> list[tuple[int, str, int]]:
        """(i, relation, j) for every ordered pair of objects: i is left of / right of / above / below j."""
        out = []
        for i, a in enumerate(self.objects):
            for j, b in enumerate(self.objects):
                if i == j:
                    continue
                if a.col < b.col:
                    out.append((i, "left of", j))
                if a.col > b.col:
                    out.append((i, "right of", j))
                if a.row < b.row:
                    out.append((i, "above", j))
                if a.row > b.row:
                    out.append((i, "below", j))
        return out

    def description(self) -> str:
        """The structured description: every object, left to right and top to bottom."""
        objs = sorted(self.objects, key=lambda o: (o.row, o.col))
        return "; ".join(f"{o.size} {o.colour} {o.shape} at row {o.row}, column {o.col}" for o in objs)

    def captions(self, k: int = 4, seed: int | None = None) -> list[str]:
        """Up to ``k`` distinct natural captions, deterministic in the scene (and ``seed``)."""
        rng = random.Random(f"{self.seed}:{seed}")
        objs = self.objects
        out = []
        listing = ", ".join(o.phrase() for o in objs[:-1]) + (" and " if len(objs) > 1 else "") + objs[-1].phrase()
        out.append(listing)
        n = len(objs)
        out.append(f"{COUNT_WORDS[n]} shape{'s' if n > 1 else ''} on a {self.background} background: {listing}")
        rels = self.relations()
        if rels:
            for i, rel, j in rng.sample(rels, min(len(rels), 2)):
                out.append(f"{objs[i].phrase()} {rel} {objs[j].phrase()}")
        else:
            o = objs[0]
            where = {0: "top", 1: "middle", 2: "bottom"}[o.row] + " " + {0: "left", 1: "centre", 2: "right"}[o.col]
            out.append(f"{o.phrase()} in the {where}".replace("middle centre", "centre"))
        seen, unique = set(), []
        for c in out:
            if c not in seen:
                seen.add(c)
                unique.append(c)
        return unique[:k]


def _allowed(colour: str, shape: str, split: str) -> bool:
    return (colour, shape) not in HELD_OUT if split in ("train", "test") else True


def sample_scene(seed: int, split: str = "train", max_objects: int = 4) -> Scene:
    """A random scene. ``train``/``test``: no held-out (colour, shape) pair; ``unseen``: at least one."""
    if split not in SPLITS:
        raise TenfoldError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    if not 1 <= max_objects <= 4:
        raise TenfoldError("a scene has 1 to 4 objects")
    rng = random.Random(f"{split}:{seed}")
    n = rng.randint(1, max_objects)
    cells = rng.sample([(r, c) for r in range(GRID) for c in range(GRID)], n)
    objs = []
    for k, (r, c) in enumerate(cells):
        while True:
            shape, colour = rng.choice(SHAPES), rng.choice(list(COLOURS))
            if split == "unseen" and k == 0:
                colour, shape = rng.choice(sorted(HELD_OUT))
            if _allowed(colour, shape, split):
                break
        objs.append(Obj(shape, colour, rng.choice(SIZES), r, c, rng.randint(-2, 2), rng.randint(-2, 2)))
    rng.shuffle(objs)
    return Scene(objs, rng.choice(list(BACKGROUNDS)), seed)


def scenes(n: int, split: str = "train", seed: int = 0, max_objects: int = 4) -> list[Scene]:
    """``n`` scenes; train and test draw from different seed ranges, so they never share a seed."""
    base = {"train": 0, "test": 10_000_000, "unseen": 20_000_000}[split] if split in SPLITS else None
    if base is None:
        raise TenfoldError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
    return [sample_scene(base + seed * 1_000_003 + i, split, max_objects) for i in range(n)]


def _geometry(obj: Obj, size: int) -> tuple[float, float, float]:
    cell = size / GRID
    s = size / 64
    cx = (obj.col + 0.5) * cell + obj.dx * s
    cy = (obj.row + 0.5) * cell + obj.dy * s
    radius = (4.5 if obj.size == "small" else 8.0) * s
    return cx, cy, radius


def bounding_box(obj: Obj, size: int) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1): the pixels ``obj`` covers in a ``size`` x ``size`` rendering, as a box."""
    cx, cy, r = _geometry(obj, size)
    return (max(0.0, cx - r), max(0.0, cy - r), min(float(size), cx + r), min(float(size), cy + r))


def _draw(draw, shape: str, cx: float, cy: float, r: float, fill) -> None:
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        q = r * 0.85
        draw.rectangle([cx - q, cy - q, cx + q, cy + q], fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == "star":
        pts = []
        for k in range(10):
            a = -np.pi / 2 + k * np.pi / 5
            rr = r if k % 2 == 0 else r * 0.42
            pts.append((cx + rr * np.cos(a), cy + rr * np.sin(a)))
        draw.polygon(pts, fill=fill)
    elif shape == "cross":
        t = r * 0.35
        draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=fill)
    else:
        raise TenfoldError(f"unknown shape {shape!r}; known: {', '.join(SHAPES)}")


def render(scene: Scene, size: int = 64):
    """The scene as an RGB ``PIL.Image`` of ``size`` x ``size`` pixels (no anti-aliasing: colours stay exact)."""
    from PIL import Image, ImageDraw

    if size < 32:
        raise TenfoldError(f"images must be at least 32 pixels wide (got {size})")
    if scene.background not in BACKGROUNDS:
        raise TenfoldError(f"unknown background {scene.background!r}")
    img = Image.new("RGB", (size, size), BACKGROUNDS[scene.background])
    draw = ImageDraw.Draw(img)
    for o in scene.objects:
        if o.colour not in COLOURS:
            raise TenfoldError(f"unknown colour {o.colour!r}; known: {', '.join(COLOURS)}")
        cx, cy, r = _geometry(o, size)
        _draw(draw, o.shape, cx, cy, r, COLOURS[o.colour])
    return img


def parse(image) -> Scene:
    """Read a rendered image back into objects: per grid cell, the colour of its pixels, and the (shape, size)
    whose rendered template overlaps them best. Works on images of this world (any size >= 32)."""
    from PIL import Image, ImageDraw

    arr = np.asarray(image.convert("RGB"), dtype=np.int32)
    size = arr.shape[0]
    if arr.shape[0] != arr.shape[1] or size < 32:
        raise TenfoldError(f"expected a square image of at least 32 pixels (got {arr.shape[1]}x{arr.shape[0]})")
    palette = np.array(list(COLOURS.values()))
    bg_rgb = arr[0, 0]
    background = min(BACKGROUNDS, key=lambda b: np.abs(np.array(BACKGROUNDS[b]) - bg_rgb).sum())
    # each pixel: nearest object colour, or background when closer to the background colour
    dist = np.abs(arr[:, :, None, :] - palette[None, None]).sum(-1)
    nearest = dist.argmin(-1)
    is_obj = dist.min(-1) < np.abs(arr - np.array(BACKGROUNDS[background])).sum(-1)
    cell = size / GRID
    objs = []
    for r in range(GRID):
        for c in range(GRID):
            y0, y1, x0, x1 = int(r * cell), int((r + 1) * cell), int(c * cell), int((c + 1) * cell)
            mask = is_obj[y0:y1, x0:x1]
            if mask.sum() < max(4, (size / 64) ** 2 * 8):
                continue
            colour = list(COLOURS)[np.bincount(nearest[y0:y1, x0:x1][mask]).argmax()]
            ys, xs = np.nonzero(mask)
            best, best_iou = None, -1.0
            for shape in SHAPES:
                for sz in SIZES:
                    for dx in range(-2, 3):
                        for dy in range(-2, 3):
                            o = Obj(shape, colour, sz, r, c, dx, dy)
                            tpl = Image.new("1", (size, size), 0)
                            cx, cy, rad = _geometry(o, size)
                            _draw(ImageDraw.Draw(tpl), shape, cx, cy, rad, 1)
                            t = np.asarray(tpl, dtype=bool)[y0:y1, x0:x1]
                            inter = np.logical_and(t, mask).sum()
                            iou = inter / max(1, np.logical_or(t, mask).sum())
                            if iou > best_iou:
                                best, best_iou = o, iou
            objs.append(best)
    return Scene(objs, background, meta={"parsed": True})


def same_objects(a: Scene, b: Scene) -> bool:
    """Equal as sets of (shape, colour, size, row, col); jitter ignored."""
    key = lambda s: sorted((o.shape, o.colour, o.size, o.row, o.col) for o in s.objects)  # noqa: E731
    return key(a) == key(b)


def write_dataset(out: str | Path, n: int, split: str = "train", size: int = 64, seed: int = 0, progress=None,
                  force: bool = False) -> Path:
    """PNG files and ``scenes.jsonl`` (description, captions, objects) under ``out``.

    All or nothing: the files are written into a staging folder beside ``out`` (``.<name>.partial``) that is
    renamed to ``out`` once complete, and removed if the run is interrupted, so ``out`` is never half-made. An
    ``out`` that already holds a world's files is refused (``force=True`` replaces it), one that holds anything else
    always is; a staging folder left by a killed run is removed.
    """
    if n < 1:
        raise TenfoldError("--n must be at least 1")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise TenfoldError(f"--out {out} is a file; the world is written into a folder")
    held = list(out.iterdir()) if out.is_dir() else []
    if held and any(not p.is_file() or (p.suffix != ".png" and p.name != "scenes.jsonl") for p in held):
        raise TenfoldError(f"--out {out} holds other files than a world's (PNG files, scenes.jsonl): give a new folder")
    if held and not force:
        what = "a world" if (out / "scenes.jsonl").is_file() else "PNG files but no scenes.jsonl (a half-made world)"
        raise TenfoldError(f"--out {out} already holds {what}: give a new folder, or --force to replace it")
    with staged_folder(out) as staging:
        lines = []
        for i, scene in enumerate(scenes(n, split, seed)):
            name = f"{split}-{i:06d}.png"
            render(scene, size).save(staging / name)
            lines.append(json.dumps({"image": name, "split": split, **scene.to_dict(),
                                     "description": scene.description(), "captions": scene.captions()}))
            if progress:
                progress(i + 1, n)
        (staging / "scenes.jsonl").write_text("\n".join(lines) + "\n")
    return out
