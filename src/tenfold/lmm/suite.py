"""Probe suites for vision-language models (the test-sample categories of Yang et al. 2023, Secs. 4-9, as data).

A suite is a JSON or YAML file::

    name: my-probes
    samples:
      - id: count-1
        category: counting                 # the paper's: captioning, attributes, counting, spatial, text,
                                           # referring, few-shot - or any name of the user's
        images: [images/a.png]             # paths relative to the suite file, or data: URLs
        prompt: How many objects are there?
        answer: 3
        scoring: numeric                   # exact | contains | all_of | numeric | choice | judge
        tolerance: 0                       # numeric only
        choices: [left, right]             # choice only
        pointer: arrow                     # the visual referring prompt used, if any (for per-pointer results)
        examples:                          # in-context examples shown before the question (few-shot)
          - {images: [images/b.png], prompt: How many objects are there?, answer: 2}

Where the prompt has no ``<image>`` placeholder, the images come first. :func:`load_suite` checks everything and
raises one :class:`~tenfold.errors.TenfoldError` line naming the file, the sample and the field.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tenfold.errors import TenfoldError
from tenfold.lmm.referring import POINTERS

CATEGORIES = ("captioning", "attributes", "counting", "spatial", "text", "referring", "few-shot")
SCORERS = ("exact", "contains", "all_of", "numeric", "choice", "judge")
IMAGE_TOKEN = "<image>"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _placeholders_fit(prompt: str, images: list[str]) -> None:
    found = prompt.count(IMAGE_TOKEN)
    if found and found != len(images):
        raise ValueError(f"the prompt has {found} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)")


class Example(_Strict):
    images: list[str] = []
    prompt: str = Field(min_length=1)
    answer: str

    @model_validator(mode="after")
    def _fit(self):
        _placeholders_fit(self.prompt, self.images)
        return self


class Sample(_Strict):
    id: str = Field(min_length=1)
    category: str = Field(min_length=1)
    images: list[str] = []
    prompt: str = Field(min_length=1)
    answer: str | float | list[str]
    scoring: Literal[SCORERS] = "exact"
    tolerance: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    choices: list[str] | None = None
    pointer: str | None = None
    examples: list[Example] = []
    meta: dict = {}

    @field_validator("pointer")
    @classmethod
    def _pointer(cls, v):
        if v is not None and v not in POINTERS:
            raise ValueError(f"unknown pointer {v!r}; choose from: {', '.join(POINTERS)}")
        return v

    @model_validator(mode="after")
    def _consistent(self):
        _placeholders_fit(self.prompt, self.images)
        if self.scoring == "numeric":
            try:
                float(self.answer)
            except (TypeError, ValueError):
                raise ValueError(f"numeric scoring needs a number as the answer, got {self.answer!r}") from None
        if self.scoring == "choice":
            if not self.choices or len(self.choices) < 2:
                raise ValueError("choice scoring needs 'choices' with at least two options")
            if str(self.answer) not in self.choices:
                raise ValueError(f"the answer {self.answer!r} is not one of the choices {self.choices}")
        elif self.choices is not None:
            raise ValueError("'choices' is only used with choice scoring")
        if self.scoring == "all_of" and not (isinstance(self.answer, list) and self.answer):
            raise ValueError("all_of scoring needs a non-empty list of strings as the answer")
        if self.scoring != "all_of" and isinstance(self.answer, list):
            raise ValueError("a list answer needs all_of scoring")
        return self


class Suite(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    samples: list[Sample] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self):
        seen = set()
        for s in self.samples:
            if s.id in seen:
                raise ValueError(f"two samples have the id {s.id!r}")
            seen.add(s.id)
        return self


def _where(suite_data, loc: tuple) -> str:
    """'samples[3] (id 'x').scoring' from a pydantic error location."""
    parts, node = [], suite_data
    for key in loc:
        if isinstance(key, int):
            label = f"[{key}]"
            try:
                node = node[key]
                if isinstance(node, dict) and "id" in node:
                    label += f" (id {node['id']!r})"
            except (IndexError, KeyError, TypeError):
                node = None
            parts.append(label)
        else:
            parts.append(("." if parts else "") + str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return "".join(parts)


def parse_suite(data, source: str = "suite") -> Suite:
    """A :class:`Suite` from already-parsed JSON/YAML data (one clear error line if it is not one)."""
    if not isinstance(data, dict):
        raise TenfoldError(f"{source}: a suite is a mapping with 'name' and 'samples'")
    try:
        return Suite.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = _where(data, tuple(k for k in err["loc"] if not str(k).startswith("function-after")))
        message = err["msg"].removeprefix("Value error, ")
        raise TenfoldError(f"{source}: {where or 'suite'}: {message}") from None


def suite_file(path: str | Path) -> Path:
    """``path``, or the ``suite.json`` inside it when ``path`` is a folder that ``tenfold lmm suite --out`` made
    (image paths in a suite are relative to the file's folder)."""
    path = Path(path)
    return path / "suite.json" if path.is_dir() and (path / "suite.json").is_file() else path


def load_suite(path: str | Path) -> Suite:
    """Read and check a suite file (``.json``, ``.yaml`` or ``.yml``; see :func:`suite_file` for a folder)."""
    path = suite_file(path)
    if not path.is_file():
        raise TenfoldError(f"no suite file at {path}")
    import yaml

    is_yaml = path.suffix.lower() in (".yaml", ".yml")
    try:
        text = path.read_text()
        data = yaml.safe_load(text) if is_yaml else json.loads(text)
    except (yaml.YAMLError, ValueError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        first = " ".join(str(exc).split())[:160]
        raise TenfoldError(f"{path}: not valid {'YAML' if is_yaml else 'JSON'} ({first})") from None
    suite = parse_suite(data, str(path))
    for s in suite.samples:  # image files must exist: better now than half way through a paid run
        for ref in s.images + [i for e in s.examples for i in e.images]:
            if not ref.startswith("data:") and not (path.parent / ref).is_file():
                raise TenfoldError(f"{path}: sample {s.id!r}: no image file {ref!r} (paths are relative to the suite)")
    return suite


def save_suite(suite: Suite, path: str | Path) -> Path:
    path = Path(path)
    data = suite.model_dump(exclude_defaults=True)
    data["name"] = suite.name
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        path.write_text(yaml.safe_dump(data, sort_keys=False))
    else:
        path.write_text(json.dumps(data, indent=1))
    return path


def read_images(refs: list[str], base: str | Path) -> list:
    """PIL images for a sample's image references (files relative to ``base``, or data URLs)."""
    from tenfold.serve.images import BadImage, decode_data_url
    from tenfold.vision.cli import read_image

    out = []
    for ref in refs:
        if ref.startswith("data:"):
            try:
                out.append(decode_data_url(ref, 4096 * 4096))
            except BadImage as exc:
                raise TenfoldError(f"bad data URL image: {exc}") from None
        else:
            out.append(read_image(Path(base) / ref))
    return out
