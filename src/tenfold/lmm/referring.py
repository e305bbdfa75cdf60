"""Visual referring prompts (Yang et al. 2023, "The Dawn of LMMs", Sec. 5): point at a region, ask about it.

The paper edits the image itself to say *which* part a question is about - an arrow, a box, a circle, a point, a
crop shown as a second image, or numbered marks on every object ("set-of-marks") - and compares that with naming
the region by coordinates in the text. Each function here returns a new image (the input is left as it was) and
:func:`refer` returns the images and the phrase that names the region for a question ("the object the cyan arrow
points to"). Regions are boxes ``(x0, y0, x1, y1)`` in pixels. The default pointer colour, cyan, is not one of the
visual world's object colours, so a pointer is never mistaken for an object.
"""
from __future__ import annotations

import math

from tenfold.errors import TenfoldError

POINTERS = ("arrow", "box", "circle", "point", "crop", "marks", "coordinates")
POINTER_COLOURS = {"cyan": (0, 255, 255), "magenta": (255, 0, 255), "lime": (160, 255, 0)}

Box = tuple[float, float, float, float]


def _rgb(colour: str) -> tuple[int, int, int]:
    if colour not in POINTER_COLOURS:
        raise TenfoldError(f"unknown pointer colour {colour!r}; choose from: {', '.join(POINTER_COLOURS)}")
    return POINTER_COLOURS[colour]


def _check_box(image, box: Box) -> Box:
    if len(box) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box):
        raise TenfoldError(f"a region is four finite numbers (x0, y0, x1, y1); got {box!r}")
    x0, y0, x1, y1 = box
    w, h = image.size
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise TenfoldError(f"region {box!r} is not inside the {w}x{h} image with x0 < x1 and y0 < y1")
    return box


def _width(image) -> int:
    """Stroke width that survives downscaling to a small model's input (about 1/32 of the image side)."""
    return max(1, round(min(image.size) / 32))


def draw_box(image, box: Box, colour: str = "cyan", margin: float = 2):
    """A rectangle around ``box`` (``margin`` pixels outside it)."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = _check_box(image, box)
    out = image.convert("RGB").copy()
    w, h = out.size
    pad = margin + _width(out) - 1  # PIL draws the outline inwards: its inner edge stays ``margin`` px out
    rect = [max(0, x0 - pad), max(0, y0 - pad), min(w - 1, x1 + pad), min(h - 1, y1 + pad)]
    ImageDraw.Draw(out).rectangle(rect, outline=_rgb(colour), width=_width(out))
    return out


def draw_circle(image, box: Box, colour: str = "cyan", margin: float = 3):
    """An ellipse around ``box``, clear of the box's corners."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = _check_box(image, box)
    out = image.convert("RGB").copy()
    w, h = out.size
    # the ellipse through the box's corners has half-axes sqrt(2) x the box's; the outline is drawn inwards
    pad = margin + _width(out)
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2 * 1.42 + pad, (y1 - y0) / 2 * 1.42 + pad
    ImageDraw.Draw(out).ellipse([max(0, cx - rx), max(0, cy - ry), min(w - 1, cx + rx), min(h - 1, cy + ry)],
                                outline=_rgb(colour), width=_width(out))
    return out


def draw_point(image, box: Box, colour: str = "cyan", radius: float | None = None):
    """A filled dot at the centre of ``box``."""
    from PIL import ImageDraw

    x0, y0, x1, y1 = _check_box(image, box)
    out = image.convert("RGB").copy()
    r = radius if radius is not None else max(1.5, min(out.size) / 40)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    ImageDraw.Draw(out).ellipse([cx - r, cy - r, cx + r, cy + r], fill=_rgb(colour))
    return out


def arrow_geometry(image, box: Box, length: float | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
    """(tail, tip) of an arrow pointing at ``box``: it comes from the side with the most room, tip at the box's edge."""
    x0, y0, x1, y1 = _check_box(image, box)
    w, h = image.size
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    room = {(-1, 0): x0, (1, 0): w - x1, (0, -1): y0, (0, 1): h - y1}
    (dx, dy), space = max(room.items(), key=lambda kv: kv[1])
    gap = 1.0
    tip = (x0 - gap if dx < 0 else x1 + gap if dx > 0 else cx, y0 - gap if dy < 0 else y1 + gap if dy > 0 else cy)
    length = min(length or max(6.0, min(w, h) / 4), max(2.0, space - gap - 1))
    tail = (tip[0] + dx * length, tip[1] + dy * length)
    return tail, tip


def draw_arrow(image, box: Box, colour: str = "cyan", length: float | None = None):
    """A straight arrow from outside ``box`` whose head touches the box's edge."""
    from PIL import ImageDraw

    out = image.convert("RGB").copy()
    tail, tip = arrow_geometry(out, box, length)
    draw, width, rgb = ImageDraw.Draw(out), _width(out), _rgb(colour)
    draw.line([tail, tip], fill=rgb, width=width)
    ang = math.atan2(tip[1] - tail[1], tip[0] - tail[0])
    head = max(3.0, min(out.size) / 16)
    left = (tip[0] - head * math.cos(ang - 0.5), tip[1] - head * math.sin(ang - 0.5))
    right = (tip[0] - head * math.cos(ang + 0.5), tip[1] - head * math.sin(ang + 0.5))
    draw.polygon([tip, left, right], fill=rgb)
    return out


def crop(image, box: Box, margin: float = 2, size: int | None = None):
    """The region (plus ``margin``) as its own image, resized to ``size`` x ``size`` when given."""
    x0, y0, x1, y1 = _check_box(image, box)
    w, h = image.size
    out = image.convert("RGB").crop((int(max(0, x0 - margin)), int(max(0, y0 - margin)),
                                     int(math.ceil(min(w, x1 + margin))), int(math.ceil(min(h, y1 + margin)))))
    return out.resize((size, size)) if size else out


def mark_positions(image, boxes: list[Box]) -> list[tuple[float, float]]:
    """Where set-of-marks puts each number: just above-left of its box, kept inside the image."""
    w, h = image.size
    side = max(6, min(w, h) // 10)
    return [(min(max(0.0, b[0] - side * 0.6), w - side), min(max(0.0, b[1] - side * 0.9), h - side)) for b in boxes]


def draw_marks(image, boxes: list[Box], colour: str = "cyan"):
    """Set-of-marks: the number k + 1 beside the k-th box, on a small filled label."""
    from PIL import ImageDraw, ImageFont

    if not boxes:
        raise TenfoldError("set-of-marks needs at least one region")
    out = image.convert("RGB").copy()
    for b in boxes:
        _check_box(out, b)
    side = max(6, min(out.size) // 10)
    draw = ImageDraw.Draw(out)
    font = ImageFont.load_default(size=max(6, side - 1))
    for k, (x, y) in enumerate(mark_positions(out, boxes)):
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=_rgb(colour))
        draw.text((x + side / 2, y + side / 2), str(k + 1), fill=(0, 0, 0), font=font, anchor="mm")
    return out


def refer(image, box: Box, pointer: str, colour: str = "cyan", boxes: list[Box] | None = None,
          crop_size: int | None = None) -> tuple[list, str]:
    """(images, phrase) that make ``box`` the region a question is about, by ``pointer``.

    ``marks`` numbers every region in ``boxes`` (which must hold ``box``); ``crop`` adds the region as a second
    image; ``coordinates`` leaves the image alone and names the region in the text.
    """
    if pointer not in POINTERS:
        raise TenfoldError(f"unknown pointer {pointer!r}; choose from: {', '.join(POINTERS)}")
    _check_box(image, box)
    if pointer == "arrow":
        return [draw_arrow(image, box, colour)], f"the object the {colour} arrow points to"
    if pointer == "box":
        return [draw_box(image, box, colour)], f"the object inside the {colour} box"
    if pointer == "circle":
        return [draw_circle(image, box, colour)], f"the object circled in {colour}"
    if pointer == "point":
        return [draw_point(image, box, colour)], f"the object under the {colour} dot"
    if pointer == "crop":
        return ([image.convert("RGB").copy(), crop(image, box, size=crop_size or image.size[0])],
                "the object shown in the second image")
    if pointer == "marks":
        boxes = list(boxes or [box])
        if tuple(box) not in [tuple(b) for b in boxes]:
            raise TenfoldError("set-of-marks: the region asked about must be one of the marked regions")
        k = [tuple(b) for b in boxes].index(tuple(box)) + 1
        return [draw_marks(image, boxes, colour)], f"object number {k}"
    w, h = image.size
    x0, y0, x1, y1 = (round(v) for v in box)
    return ([image.convert("RGB").copy()],
            f"the object inside the region x {x0}-{x1}, y {y0}-{y1} (pixels of this {w}x{h} image, origin at the "
            "top left)")
