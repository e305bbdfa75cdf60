"""Model loading: language models and sentence embedders, bundled defaults first."""
from tenfold.models.embedder import DEFAULT_EMBEDDER, load_embedder
from tenfold.models.lm import DEFAULT_LM, chat_ids, convert_bundled, is_cached, load_lm

__all__ = ["DEFAULT_EMBEDDER", "DEFAULT_LM", "available", "chat_ids", "convert_bundled", "is_cached", "load_embedder", "load_lm"]


def available() -> list[dict]:
    """What models tenfold can use offline right now, and whether they are cached."""
    from tenfold.models.embedder import bundled_embedder_dir
    from tenfold.models.lm import bundled_gguf, cached_dir
    from tenfold.errors import TenfoldError

    rows = []
    try:
        gguf = str(bundled_gguf())
    except TenfoldError as exc:
        gguf = f"missing ({exc})"
    rows.append({"name": DEFAULT_LM, "kind": "causal LM (default)", "source": gguf,
                 "cached": is_cached(), "cache": str(cached_dir())})
    try:
        emb = str(bundled_embedder_dir())
    except TenfoldError as exc:
        emb = f"missing ({exc})"
    rows.append({"name": DEFAULT_EMBEDDER, "kind": "sentence embedder (default)", "source": emb,
                 "cached": not emb.startswith("missing"), "cache": emb})
    return rows
