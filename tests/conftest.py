import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def lm():
    """The real bundled model, loaded once for the whole test session."""
    from tenfold.models import load_lm

    return load_lm()
