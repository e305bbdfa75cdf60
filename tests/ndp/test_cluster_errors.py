"""Error paths of tenfold.cluster.connect that a live cluster cannot be made to produce on demand (mocked ray.init)."""
import pytest
import ray  # the cluster extra, which `make test` installs: fails, not skips, without it

from tenfold import cluster
from tenfold.errors import TenfoldError

SERVER_FAILURE = ConnectionAbortedError(
    "Initialization failure from server:\nTraceback (most recent call last):\n  File \"proxier.py\", line 766\n"
    "RuntimeError: Starting Ray client server failed. See ray_client_server_23000.err for detailed logs.\n")


@pytest.fixture
def reachable(monkeypatch):
    monkeypatch.setattr(cluster, "_check_reachable", lambda address: None)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 4.0})


def test_a_ray_client_server_that_fails_to_start_once_is_retried(reachable, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(kwargs["address"])
        if len(calls) == 1:
            raise SERVER_FAILURE

    monkeypatch.setattr(ray, "init", init)
    conn = cluster.connect("ray://10.0.0.5:10001")
    assert calls == ["ray://10.0.0.5:10001"] * 2 and conn.cpus == 4 and conn.owned


def test_a_ray_client_server_that_keeps_failing_is_one_line_with_its_reason(reachable, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(1)
        raise SERVER_FAILURE

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(TenfoldError) as err:
        cluster.connect("ray://10.0.0.5:10001")
    assert len(calls) == 2
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("cannot connect to the Ray cluster at ray://10.0.0.5:10001: Initialization failure")
    assert "Starting Ray client server failed" in message


def test_other_connection_errors_are_not_retried(reachable, monkeypatch):
    calls = []

    def init(**kwargs):
        calls.append(1)
        raise ConnectionError("Could not find any running Ray instance.\nPlease specify the one to connect to")

    monkeypatch.setattr(ray, "init", init)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(TenfoldError, match=r"Could not find any running Ray instance\. \(if the cluster checks tokens"):
        cluster.connect("10.0.0.5:6379")
    assert calls == [1]


def test_ctrl_c_while_a_local_ray_starts_leaves_no_ray_process(monkeypatch):
    """Ctrl-C inside ray.init (here: once the raylet runs, while Ray waits for it to register) must not leave Ray's
    processes behind: the instance is let finish starting, then shut down whole, and the interrupt goes on."""
    import signal

    import psutil

    real_get_node = ray._private.services.get_node

    def get_node(*args, **kwargs):  # the interrupt arrives after gcs_server and raylet are up, before Ray records them
        signal.raise_signal(signal.SIGINT)
        return real_get_node(*args, **kwargs)

    monkeypatch.setattr(ray._private.services, "get_node", get_node)
    with pytest.raises(KeyboardInterrupt):
        cluster.connect("local", num_cpus=1)
    assert not ray.is_initialized()
    names = {p.name() for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != "zombie"}
    assert not names & {"raylet", "gcs_server"}, names
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C is back to normal
