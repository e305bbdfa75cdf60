"""All-or-nothing output folders: write into a staging folder, publish it by one rename."""
from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(out: Path):
    """Yield an empty staging folder beside ``out`` (``.<name>.partial``); when the block ends normally it replaces
    ``out`` (removed first if present) by one rename, and on any exception (Ctrl-C, a full disk) it is removed, so
    ``out`` is never half-made. A staging folder left by a killed run is removed first, never mixed with this one.
    The caller decides beforehand whether ``out`` may be replaced."""
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
