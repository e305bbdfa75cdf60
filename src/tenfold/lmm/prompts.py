"""From a probe to chat messages, with the paper's prompting techniques as options (Yang et al. 2023, Sec. 3).

- ``constrained``: constrained prompting - the answer's format is asked for ("Answer with a number.");
- ``good-performance``: condition on good performance - the system prompt says the assistant is an expert who
  checks its answer (the paper's counting example: "You are an expert in counting things in the image");
- ``few-shot``: the sample's in-context examples go first, as earlier user / assistant turns with their images.

Images travel as PNG data URLs in ``image_url`` parts; where the prompt has ``<image>`` placeholders the images
go there, else before the text.
"""
from __future__ import annotations

import base64
import io
from pathlib import Path

from tenfold.errors import TenfoldError
from tenfold.lmm.suite import IMAGE_TOKEN, Sample, read_images

TECHNIQUES = ("constrained", "good-performance", "few-shot")
EXPERT = ("You are an expert at reading images: you look at every part of the image carefully, count and compare "
          "with care, and check your answer before giving it. Your answers are correct.")


def data_url(image) -> str:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _content(prompt: str, images: list) -> list[dict]:
    urls = [{"type": "image_url", "image_url": {"url": data_url(im)}} for im in images]
    if IMAGE_TOKEN not in prompt:
        return urls + [{"type": "text", "text": prompt}]
    parts, pieces = [], prompt.split(IMAGE_TOKEN)
    for k, piece in enumerate(pieces):
        if piece:
            parts.append({"type": "text", "text": piece})
        if k < len(urls):
            parts.append(urls[k])
    return parts


def answer_format(sample: Sample) -> str:
    """The constrained-prompting instruction for a sample's scoring rule."""
    if sample.scoring == "numeric":
        return "Answer with a number only."
    if sample.scoring == "choice":
        return f"Answer with one of: {', '.join(sample.choices)}."
    if sample.scoring == "all_of":
        return "List every object with its colour and shape."
    return "Answer with one word."


def build_messages(sample: Sample, base: str | Path, techniques=()) -> list[dict]:
    """OpenAI chat messages for ``sample`` (images from files relative to ``base`` or data URLs)."""
    bad = [t for t in techniques if t not in TECHNIQUES]
    if bad:
        raise TenfoldError(f"unknown technique(s) {bad}; choose from: {', '.join(TECHNIQUES)}")
    suffix = f" {answer_format(sample)}" if "constrained" in techniques else ""
    messages = [{"role": "system", "content": EXPERT}] if "good-performance" in techniques else []
    if "few-shot" in techniques:
        for ex in sample.examples:
            messages.append({"role": "user", "content": _content(ex.prompt + suffix, read_images(ex.images, base))})
            messages.append({"role": "assistant", "content": ex.answer})
    messages.append({"role": "user", "content": _content(sample.prompt + suffix, read_images(sample.images, base))})
    return messages
