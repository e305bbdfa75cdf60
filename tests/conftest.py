import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def lm():
    """The real bundled model, loaded once for the whole test session."""
    from tenfold.models import load_lm

    return load_lm()


@pytest.fixture(scope="session")
def server():
    """A real ``tenfold serve`` (bundled model, cache 4+124) on a free loopback port; yields its base URL."""
    from tenfold.serve.launch import ServerProcess

    with ServerProcess(["--window", "124", "--max-tokens-cap", "512", "--max-body-bytes", "200000"],
                       start_timeout=180) as srv:
        yield srv.base
