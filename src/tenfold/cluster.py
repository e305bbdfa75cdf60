"""Ray, the optional engine for work that outgrows one machine (``pip install 'tenfold[cluster]'``).

tenfold keeps no scheduler of its own: a job that scores many independent items (a CMA-ES population)
hands them to a ``ray.util.multiprocessing.Pool``, which runs on a local Ray instance or on any Ray
cluster. :func:`connect` turns the CLI's ``--ray [ADDRESS]`` into a Ray connection, with one clear
error line when Ray is missing or the cluster cannot be reached.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from typing import NoReturn
from urllib.parse import urlsplit

from tenfold.errors import TenfoldError

LOCAL = "local"  # ``--ray`` with no address: start a Ray instance on this machine


def _ray():
    try:
        import ray
    except ImportError:
        raise TenfoldError("--ray needs Ray, an optional extra: pip install 'tenfold[cluster]'") from None
    return ray


# The HTTP/2 client preface and an empty SETTINGS frame (length 0, type 4, no flags, stream 0)
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_SETTINGS = 4  # HTTP/2 frame type a gRPC server answers the preface with


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT or ray://HOST:PORT nobody answers, or that answers but is not a Ray head (the GCS and
    the Ray Client are gRPC servers, which answer an HTTP/2 preface with a SETTINGS frame; the dashboard or a web
    server does not). ``ray.init`` would retry either for minutes."""
    if address == "auto":
        return  # Ray finds the cluster itself (RAY_ADDRESS or the one started on this machine), or says it cannot
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host = port = None
    if not host or not port or parts.scheme != "ray":
        raise TenfoldError(f"--ray {address!r}: give HOST:PORT of the Ray head (GCS, e.g. 10.0.0.5:6379), "
                           "ray://HOST:PORT (Ray Client), 'auto', or no address for a local Ray instance")
    try:
        conn = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise TenfoldError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc.__class__.__name__}") from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS cluster answers a handshake, not a bare preface
        try:
            conn.sendall(_HTTP2_PREFACE)
            head = conn.recv(9)
        except OSError:
            head = b""
    if len(head) < 4 or head[3] != _SETTINGS:
        raise TenfoldError(f"{address} answers, but is not a Ray head (no gRPC there): give the GCS port "
                           "(`ray start --head --port`, default 6379) or ray://HOST:PORT of the Ray Client "
                           "(default 10001), not the dashboard's 8265")
    client = "://" in address  # ray://HOST:PORT: the Ray Client server; HOST:PORT: the GCS
    if _not_ray_grpc(parts.netloc, client, timeout):
        kind = "Ray Client" if client else "Ray GCS"
        raise TenfoldError(f"{address} answers gRPC, but is not a {kind} (it does not know Ray's calls): give the "
                           "GCS port (`ray start --head --port`, default 6379) or ray://HOST:PORT of the Ray Client "
                           "(default 10001)")


def _not_ray_grpc(target: str, client: bool, timeout: float) -> bool:
    """True when the gRPC server at ``target`` answers UNIMPLEMENTED to the call Ray itself makes first (the GCS's
    GetClusterId, or the Ray Client's PING): another gRPC service, or a proxy, that ``ray.init`` would retry for
    half a minute, printing a warning a second. Any other answer (OK, UNAUTHENTICATED from a cluster that checks
    tokens, a timeout) is left for ``ray.init`` to judge."""
    import grpc

    if client:
        from ray.core.generated import ray_client_pb2 as pb

        method, request = "/ray.rpc.RayletDriver/ClusterInfo", pb.ClusterInfoRequest(type=pb.ClusterInfoType.PING)
    else:
        from ray.core.generated import gcs_service_pb2 as pb

        method, request = "/ray.rpc.NodeInfoGcsService/GetClusterId", pb.GetClusterIdRequest()
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(method, request_serializer=type(request).SerializeToString,
                                   response_deserializer=lambda data: data)
        try:
            call(request, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code() == grpc.StatusCode.UNIMPLEMENTED
    return False


class RayConnection:
    """A live Ray connection; :meth:`close` shuts Ray down only if this connection started it.

    ``cpus``: the CPUs the cluster offers (what a pool can use at once).
    """

    def __init__(self, owned: bool):
        ray = _ray()
        self.owned = owned
        self.cpus = int(ray.cluster_resources().get("CPU", 0))

    def pool(self, processes: int, initializer=None, initargs=()):
        """A ``ray.util.multiprocessing.Pool`` of ``processes`` actors (one CPU each) on this cluster.

        Raises :class:`TenfoldError` when the cluster has fewer CPUs than ``processes``.
        """
        if processes > self.cpus:
            raise TenfoldError(f"{processes} workers asked for, but the Ray cluster has {self.cpus} CPUs")
        from ray.util.multiprocessing import Pool

        return Pool(processes=processes, initializer=initializer, initargs=initargs)

    def close(self) -> None:
        """Shut Ray down if this connection started it (a connection the caller opened stays open)."""
        if self.owned:
            _ray().shutdown()
            self.owned = False


def connect(address: str = LOCAL, num_cpus: int | None = None) -> RayConnection:
    """Connect to Ray: ``'local'`` starts an instance on this machine (``num_cpus`` CPUs, default all);
    ``'auto'``, ``HOST:PORT`` or ``ray://HOST:PORT`` join an existing cluster. When this process is already
    connected (``ray.init`` called by the caller), that connection is used and left open.

    Raises :class:`TenfoldError` when Ray is not installed or the address does not answer.
    """
    ray = _ray()
    if ray.is_initialized():
        return RayConnection(owned=False)
    quiet = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address in (None, "", LOCAL):  # a new instance even where `ray start` runs a cluster on this machine
        # Our own instance: Ray's notes about its setup (token authentication and the like) are not the user's concern.
        _start_local(ray, num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                     **{**quiet, "logging_level": logging.ERROR})
        return RayConnection(owned=True)
    _check_reachable(address)
    for attempt in (1, 2):
        try:
            ray.init(address=address, **quiet)
            break
        except ConnectionError as exc:
            # The Ray Client proxy starts one server process per client; on a busy head that start can miss the
            # proxy's own deadline ("Initialization failure from server"). A second connection usually finds it up.
            if attempt == 1 and "Initialization failure from server" in str(exc):
                ray.shutdown()
                continue
            _connect_failed(address, exc)
        except (RuntimeError, ValueError) as exc:
            _connect_failed(address, exc)
    return RayConnection(owned=True)


def _start_local(ray, **init) -> None:
    """``ray.init(address='local', **init)`` with Ctrl-C held until it returns, then acted on.

    Interrupted inside ``ray.init``, Ray has started its processes but not yet recorded them, so nothing shuts them
    down: its raylet's agents stay behind with no owner. Held, the instance finishes starting and is shut down whole
    before the KeyboardInterrupt goes on.
    """
    interrupted = []
    # Signal handlers live on the main thread only; an ignored SIGINT (a background job, nohup) stays ignored.
    held = threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) != signal.SIG_IGN
    previous = signal.signal(signal.SIGINT, lambda *_: interrupted.append(True)) if held else None
    try:
        ray.init(address=LOCAL, **init)
    finally:
        if held:
            signal.signal(signal.SIGINT, previous)
    if interrupted:
        ray.shutdown()
        raise KeyboardInterrupt


def _connect_failed(address: str, exc: Exception) -> NoReturn:
    """Raise the one-line error for a failed ``ray.init(address=...)``: Ray's reason (for a Ray Client server failure,
    the last line of the traceback it sends back) and, without token auth set, how to set it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    reason = lines[0] if lines else exc.__class__.__name__
    if len(lines) > 1 and lines[0].startswith("Initialization failure from server"):
        reason = f"{lines[0]} {lines[-1]}"
    hint = ""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        hint = (" (if the cluster checks tokens, as `ray start` sets up by default in recent Ray: set "
                "RAY_AUTH_MODE=token, and RAY_AUTH_TOKEN or ~/.ray/auth_token to its token)")
    raise TenfoldError(f"cannot connect to the Ray cluster at {address}: {reason[:300]}{hint}") from None
