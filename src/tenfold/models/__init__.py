"""Model loading: language models and sentence embedders, bundled defaults first."""
import lazy_loader as _lazy

# Imported on first use: models.lm needs torch, which building the CLI must not import.
__getattr__, _lazy_dir, _lazy_all = _lazy.attach(__name__, submod_attrs={
    "embedder": ["DEFAULT_EMBEDDER", "load_embedder"],
    "lm": ["DEFAULT_LM", "chat_ids", "convert_bundled", "is_cached", "load_lm"],
})
__all__ = sorted([*_lazy_all, "available"])


def __dir__():
    return list(__all__)


def available() -> list[dict]:
    """What models tenfold can use offline right now, and whether they are cached."""
    from tenfold.models.embedder import DEFAULT_EMBEDDER, bundled_embedder_dir
    from tenfold.models.lm import DEFAULT_LM, bundled_gguf, cached_dir, is_cached
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
    from tenfold.models.lm import GEMMA3_LM, assembled_gguf

    try:
        gemma = str(assembled_gguf())
    except TenfoldError as exc:
        gemma = f"missing ({exc})"
    rows.append({"name": GEMMA3_LM, "kind": "causal LM (hybrid sliding-window, base)", "source": gemma,
                 "cached": is_cached(GEMMA3_LM), "cache": str(cached_dir(GEMMA3_LM))})
    rows.append({"name": DEFAULT_EMBEDDER, "kind": "sentence embedder (default)", "source": emb,
                 "cached": not emb.startswith("missing"), "cache": emb})
    return rows
