"""tenfold: ten systems from one week of ML papers (2023-10-02..08), made usable.

Importing tenfold (or any of its packages) changes nothing in the process: no environment
variables, no global settings. The ``tenfold`` command line runs offline by default; it sets
that up in its own entry point (:func:`tenfold.cli.main`).
"""
import os

from tenfold.errors import TenfoldError

__version__ = "0.1.0"
__all__ = ["TenfoldError", "__version__", "home"]


def home() -> str:
    """Directory for tenfold's caches: ``$TENFOLD_HOME`` or ``~/.cache/tenfold``."""
    path = os.environ.get("TENFOLD_HOME") or os.path.join(os.path.expanduser("~"), ".cache", "tenfold")
    os.makedirs(path, exist_ok=True)
    return path
