"""A probe suite generated from the visual world, with exact ground truth (Yang et al. 2023's categories).

Per category, ``n`` samples from held-out (``test``) scenes:

- ``captioning``: "Describe the image." - every object's colour and shape must be named (``all_of``);
- ``attributes``: "What colour is the star?" (``exact``);
- ``counting``: "How many objects are there?" (``numeric``);
- ``spatial``: "Is the red star left or right of the blue circle?" (``choice``);
- ``text``: a word drawn on the image (the world's OCR-like scene text): "What word is written in the image?";
- ``referring``: "What colour is <the region the pointer marks>?", once per pointer type of
  :mod:`tenfold.lmm.referring` on the same scene, whose objects all have different colours;
- ``few-shot``: a counting question after two solved in-context examples (paper Sec. 3.3).
"""
from __future__ import annotations

import random
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.lmm.referring import POINTERS, refer
from tenfold.lmm.suite import CATEGORIES, Example, Sample, Suite, save_suite
from tenfold.staging import staged_folder
from tenfold.vision.questions import ask
from tenfold.vision.world import COLOURS, Scene, bounding_box, render, scenes

WORDS = ("cat", "sun", "tree", "boat", "lamp", "fish", "road", "milk", "rain", "door", "star", "bird")


def _text_image(word: str, size: int, rng: random.Random):
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (size, size), (0, 0, 0))
    font = ImageFont.load_default(size=max(10, size // 5))
    colour = COLOURS[rng.choice([c for c in COLOURS if c not in ("purple", "blue")])]  # legible on black
    ImageDraw.Draw(img).text((size / 2, size / 2), word.upper(), fill=colour, font=font, anchor="mm")
    return img


class _Writer:
    def __init__(self, out: Path, size: int):
        self.out, self.size, self.count = out, size, 0
        (out / "images").mkdir(parents=True, exist_ok=True)

    def save(self, image) -> str:
        name = f"images/{self.count:05d}.png"
        image.save(self.out / name)
        self.count += 1
        return name

    def scene(self, scene: Scene) -> str:
        return self.save(render(scene, self.size))


def world_suite(out: str | Path, n: int = 10, size: int = 128, seed: int = 0, categories=CATEGORIES,
                pointers=POINTERS, force: bool = False) -> Path:
    """Write ``images/*.png`` and ``suite.json`` under ``out``; returns the suite file.

    All or nothing, as :func:`tenfold.vision.world.write_dataset`: the suite is written into a staging folder beside
    ``out`` (``.<name>.partial``), renamed to ``out`` once complete and removed if the run is interrupted. An ``out``
    that already holds a suite is refused (``force=True`` replaces it whole, so no image of the old suite stays), one
    that holds anything else always is.
    """
    bad = [c for c in categories if c not in CATEGORIES] + [p for p in pointers if p not in POINTERS]
    if bad:
        raise TenfoldError(f"world suite: unknown categories or pointers: {', '.join(map(str, bad))}")
    if n < 1 or size < 32:  # the message names the CLI's options (--n, --size): the value given, not a list of rules
        raise TenfoldError(f"world suite: --n must be at least 1 and --size at least 32 (got n={n}, size={size})")
    out = Path(out).resolve()
    if out.exists() and not out.is_dir():
        raise TenfoldError(f"--out {out} is a file; the suite is written into a folder")
    held = {p.name for p in out.iterdir()} if out.is_dir() else set()
    if held - {"suite.json", "images"}:
        raise TenfoldError(f"--out {out} holds other files than a suite's (suite.json, images/): give a new folder")
    if held and not force:
        raise TenfoldError(f"--out {out} already holds a suite: give a new folder, or --force to replace it")
    with staged_folder(out) as staging:
        _write(staging, n, size, seed, categories, pointers)
    return out / "suite.json"


def _write(out: Path, n: int, size: int, seed: int, categories, pointers) -> Path:
    w = _Writer(out, size)
    rng = random.Random(f"lmm-suite:{seed}")
    pool = iter(scenes(200 * n + 400, "test", seed=seed + 77))
    samples: list[Sample] = []

    def next_question(kind: str, min_objects: int = 1):
        for scene in pool:
            if len(scene.objects) >= min_objects:
                q = ask(scene, kind, rng)
                if q is not None:
                    return q
        raise TenfoldError("ran out of scenes")

    for k in range(n):
        if "captioning" in categories:
            q = next_question("caption")
            samples.append(Sample(id=f"caption-{k}", category="captioning", images=[w.scene(q.scene)],
                                  prompt=q.text, scoring="all_of",
                                  answer=[f"{o.colour} {o.shape}" for o in q.scene.objects]))
        if "attributes" in categories:
            q = next_question("colour")
            samples.append(Sample(id=f"colour-{k}", category="attributes", images=[w.scene(q.scene)], prompt=q.text,
                                  answer=q.answer))
        if "counting" in categories:
            q = next_question("count")
            samples.append(Sample(id=f"count-{k}", category="counting", images=[w.scene(q.scene)], prompt=q.text,
                                  answer=q.answer, scoring="numeric"))
        if "spatial" in categories:
            q = next_question("position", 2)
            choices = ["left", "right"] if "left or right" in q.text else ["above", "below"]
            samples.append(Sample(id=f"spatial-{k}", category="spatial", images=[w.scene(q.scene)], prompt=q.text,
                                  answer=q.answer, scoring="choice", choices=choices))
        if "text" in categories:
            word = rng.choice(WORDS)
            samples.append(Sample(id=f"text-{k}", category="text", images=[w.save(_text_image(word, size, rng))],
                                  prompt="What word is written in the image?", answer=word))
        if "referring" in categories and pointers:
            scene = next(s for s in pool if len(s.objects) >= 2 and len({o.colour for o in s.objects}) ==
                         len(s.objects))
            target = rng.randrange(len(scene.objects))
            boxes = [bounding_box(o, size) for o in scene.objects]
            base = render(scene, size)
            for pointer in pointers:
                images, phrase = refer(base, boxes[target], pointer, boxes=boxes)
                samples.append(Sample(id=f"refer-{k}-{pointer}", category="referring",
                                      images=[w.save(im) for im in images], prompt=f"What colour is {phrase}?",
                                      answer=scene.objects[target].colour, pointer=pointer,
                                      meta={"scene": scene.to_dict(), "target": target}))
        if "few-shot" in categories:
            shots = [next_question("count") for _ in range(3)]
            examples = [Example(images=[w.scene(q.scene)], prompt=q.text, answer=q.answer) for q in shots[:2]]
            samples.append(Sample(id=f"fewshot-{k}", category="few-shot", images=[w.scene(shots[2].scene)],
                                  prompt=shots[2].text, answer=shots[2].answer, scoring="numeric",
                                  examples=examples))
    suite = Suite(name=f"visual-world-{seed}", description=f"{n} samples per category from held-out scenes "
                                                            f"({size}x{size} px), exact ground truth", samples=samples)
    return save_suite(suite, out / "suite.json")
