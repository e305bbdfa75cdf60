"""tenfold: ten systems from one week of ML papers (2023-10-02..08), made usable.

Everything runs offline by default: the Hugging Face libraries are told not to touch the
network unless the user has set these variables themselves.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tenfold.errors import TenfoldError  # noqa: E402

__version__ = "0.1.0"
__all__ = ["TenfoldError", "__version__", "home"]


def home() -> str:
    """Directory for tenfold's caches: ``$TENFOLD_HOME`` or ``~/.cache/tenfold``."""
    path = os.environ.get("TENFOLD_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tenfold")
    os.makedirs(path, exist_ok=True)
    return path
