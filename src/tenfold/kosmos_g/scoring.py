"""Scoring generated images (Kosmos-G, Pan et al. 2023, Sec. 4.1, in miniature).

DreamBench scores subject fidelity with DINO / CLIP-I (generated vs real subject images) and prompt fidelity with
CLIP-T (generated image vs prompt text). The world gives something stricter: its parser reads a generated image
back into objects, so each target object can be checked exactly - the right colour and the right shape in the
right grid cell, no extra objects. CLIP-I / CLIP-T use the small CLIP trained on the world (its cosine scale is
its own: the paper's OpenAI-CLIP numbers are not comparable in absolute value).
"""
from __future__ import annotations

import numpy as np

from tenfold.vision.world import Scene, parse

ATTRIBUTES = ("colour", "shape", "position", "count", "exact")


def attribute_scores(image, target: Scene) -> dict[str, float]:
    """Per image: ``colour`` / ``shape`` = share of target objects whose grid cell holds an object of that colour /
    shape; ``position`` = the occupied cells are exactly the target's; ``count`` = as many objects as the target;
    ``exact`` = every target object with its colour and shape in its cell and nothing else (size ignored)."""
    found = {(o.row, o.col): o for o in parse(image).objects}
    want = {(o.row, o.col): o for o in target.objects}
    colour = [cell in found and found[cell].colour == o.colour for cell, o in want.items()]
    shape = [cell in found and found[cell].shape == o.shape for cell, o in want.items()]
    return {"colour": float(np.mean(colour)), "shape": float(np.mean(shape)),
            "position": float(set(found) == set(want)), "count": float(len(found) == len(want)),
            "exact": float(set(found) == set(want) and all(colour) and all(shape))}


def mean_scores(rows: list[dict]) -> dict[str, float]:
    """The mean of each attribute over images (rounded to 3 places)."""
    if not rows:
        return {}
    return {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}


def clip_scores(clip_model, tokenizer, generated: list, subjects: list[list], texts: list[str]) -> dict[str, float]:
    """``clip_i``: mean cosine between each generated image and its subject images; ``clip_t``: mean cosine between
    each generated image and its text. Images are compared at the CLIP's input size."""
    from tenfold.vision.clip import embed

    size = clip_model.config.vision_config.image_size
    gen = embed(clip_model, tokenizer, images=[im.resize((size, size)) for im in generated], texts=texts,
                image_size=size)
    flat = [s.resize((size, size)) for subs in subjects for s in subs]
    subj = embed(clip_model, tokenizer, images=flat, image_size=size)["image"]
    clip_i, k = [], 0
    for row, subs in enumerate(subjects):
        clip_i.append(float((subj[k:k + len(subs)] @ gen["image"][row]).mean()))
        k += len(subs)
    clip_t = (gen["image"] * gen["text"]).sum(-1)
    return {"clip_i": round(float(np.mean(clip_i)), 3), "clip_t": round(float(clip_t.mean()), 3)}
