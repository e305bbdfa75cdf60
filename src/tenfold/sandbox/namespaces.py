"""OS-level isolation for model-written code: Linux namespaces through bubblewrap (``bwrap``).

STOP (Zelikman et al. 2023, Sec. 7, "Concerns about self-improvement") counts how often a
self-improving program switches its sandbox off; a sandbox that the program itself could switch
off is no boundary. CPython's documentation says audit hooks "are not suitable for implementing a
sandbox", and HumanEval's own harness calls its guard "NOT a security sandbox". So every sandboxed
run goes through bubblewrap (Debian package ``bubblewrap``, the tool Flatpak is built on), and the
audit hook in :mod:`tenfold.sandbox._runner` stays behind it as a tripwire that names what the program
tried. No namespace code of our own: bwrap makes the namespaces and the mounts.

What a program sees (``bwrap --unshare-all --unshare-user``: new user, mount, PID, network, IPC,
UTS and cgroup namespaces; uid/gid 65534 inside, every capability dropped, ``--disable-userns``):

- ``/opt/python``: the interpreter, its standard library and ``libpython``, read-only (the base
  installation's own ``site-packages`` is covered by an empty read-only tmpfs);
- ``/opt/lib``: numpy (and the BLAS it ships), read-only; nothing else that is installed;
- the system's shared libraries (``/usr/lib``, ``/lib*`` and ``/etc/ld.so.cache``), read-only;
- ``/sandbox``: its own empty writable work dir, a small tmpfs (``WORK_BYTES``) that lives in the
  namespaces only: nothing the program leaves there (a symlink to a host file, a FIFO, a setuid file,
  gigabytes of files) ever reaches the host's disk or a path the host reads;
- ``/opt/io``: the runner's files, each bound on its own from a private (0700) host dir: its program and
  input read-only, its result and records writable (capped by the file-size limit) but not replaceable,
  in a read-only directory;
- a private ``/tmp`` (a small tmpfs), a minimal read-only ``/dev`` (no ``/dev/shm`` to write: bwrap's is a
  tmpfs without a size) and the ``/proc`` of its own PID namespace;
- no home, no project tree, no other ``/etc`` file, no network (only a loopback that is down);
- a read-only root, a new session (no terminal injection), death with its parent, a clean environment;
- optionally a seccomp filter, built with libseccomp through ``pyseccomp`` (never by hand), that
  refuses new processes (fork, vfork, clone without ``CLONE_THREAD``) with ``EPERM``.

When tenfold runs as root and everything to be bound (interpreter, standard library, numpy, the
runner, the system libraries, the temp dir) is readable by uid 65534, bwrap itself is started as
65534 (``subprocess.Popen(user=...)``, :func:`host_uid`): the program is then unprivileged outside
too. Where it is not (the Python installation under a root-only home, e.g. pyenv's in ``/root``),
bwrap runs as root: inside, the program is still uid 65534 of a new user namespace with no
capabilities at all, but that uid maps to root outside, which is why everything of the host it can
see is mounted read-only (``/proc`` included: root's uid may write sysctl files without any
capability) and why the seccomp layer, not RLIMIT_NPROC (which root's uid escapes), is what bounds
process creation.

:func:`probe` tries the whole set-up once per process (a real interpreter start that imports numpy)
and says why it cannot be used; :mod:`tenfold.sandbox` then falls back to the in-process guard.
"""
from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
import tempfile
from dataclasses import dataclass
from pathlib import Path

INSIDE_WORK = "/sandbox"
INSIDE_PYTHON = "/opt/python"
INSIDE_LIB = "/opt/lib"
INSIDE_RUNNER = "/opt/tenfold/runner.py"
SANDBOX_UID = 65534  # "nobody"
TMP_BYTES = 64 << 20  # the private /tmp
WORK_BYTES = 64 << 20  # the private /sandbox
INSIDE_IO = "/opt/io"
INPUT_FILES = ("program.py", "input.json")  # bound read-only
OUTPUT_FILES = ("result.json", "violations.jsonl", "attempts.jsonl")  # bound writable, one by one
SYSTEM_LIBS = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/lib", "/lib64", "/lib32")
LD_CACHE = "/etc/ld.so.cache"


class IsolationUnavailable(RuntimeError):
    """Namespaces cannot be used here; the message says why (no bwrap, no user namespaces, ...)."""


@dataclass(frozen=True)
class PythonLayout:
    """Where the pieces of the running interpreter are on the host, and where they go inside."""

    executable: str  # the real interpreter binary (a venv's python resolves to it)
    version: str  # "3.11"
    stdlib: str  # contains lib-dynload
    libpython: str | None  # the shared libpython, when the interpreter is linked to one
    numpy: str
    numpy_libs: str | None  # numpy.libs/ (the wheel's OpenBLAS and gfortran) when present

    @property
    def inside_executable(self) -> str:
        return f"{INSIDE_PYTHON}/bin/python{self.version}"

    @property
    def inside_stdlib(self) -> str:
        return f"{INSIDE_PYTHON}/lib/python{self.version}"


@functools.lru_cache(maxsize=1)
def python_layout() -> PythonLayout:
    """The running interpreter's layout. Raises :class:`IsolationUnavailable` when it cannot be mapped."""
    exe = os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stdlib = os.path.realpath(os.path.dirname(os.__file__))
    dynload = [os.path.realpath(p) for p in sys.path if p.rstrip("/").endswith("lib-dynload")]
    if not dynload or os.path.dirname(dynload[0]) != stdlib:
        raise IsolationUnavailable(f"this Python's standard library layout is not supported ({stdlib}, {dynload})")
    if not os.path.isfile(exe):
        raise IsolationUnavailable(f"cannot find the Python interpreter binary ({exe})")
    libpython = None
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        name, libdir = sysconfig.get_config_var("INSTSONAME"), sysconfig.get_config_var("LIBDIR")
        if name and libdir and os.path.isfile(os.path.join(libdir, name)):
            libpython = os.path.realpath(os.path.join(libdir, name))
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        raise IsolationUnavailable("numpy is not installed")
    numpy_dir = os.path.realpath(list(spec.submodule_search_locations)[0])
    libs = os.path.join(os.path.dirname(numpy_dir), "numpy.libs")
    return PythonLayout(exe, version, stdlib, libpython, numpy_dir, libs if os.path.isdir(libs) else None)


@functools.lru_cache(maxsize=1)
def seccomp_filter() -> bytes | None:
    """A compiled seccomp-BPF program refusing new processes (EPERM), or None without libseccomp.

    Built with pyseccomp (ctypes bindings with the API of libseccomp's own Python module); threads
    (clone with ``CLONE_THREAD``) stay allowed; clone3 answers ENOSYS so that the C library falls
    back to clone, which the filter can inspect; system calls of another architecture kill the process.
    """
    try:
        import errno

        import pyseccomp as sc
    except (ImportError, OSError):  # no package, or no libseccomp.so.2 to load
        return None
    try:
        clone_thread = 0x00010000
        f = sc.SyscallFilter(defaction=sc.ALLOW)
        for call in ("fork", "vfork"):
            f.add_rule(sc.ERRNO(errno.EPERM), call)
        f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, clone_thread, 0))
        f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        read, write = os.pipe()
        try:
            with os.fdopen(write, "wb") as out:
                f.export_bpf(out)
            chunks = []
            while chunk := os.read(read, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(read)
        return b"".join(chunks) or None
    except Exception:  # a libseccomp too old for a rule, an unknown architecture: no filter layer
        return None


def reachable_by_others(path: str) -> bool:
    """Whether any uid could reach ``path``: every directory above it searchable by others, it readable
    by others (and searchable, for a directory). Symbolic links are resolved first."""
    full = Path(os.path.realpath(path))
    try:
        for parent in full.parents:
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return False
        mode = os.stat(full).st_mode
    except OSError:
        return False
    need = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(mode) else 0)
    return mode & need == need


@functools.lru_cache(maxsize=1)
def host_uid() -> int:
    """The uid bwrap runs as, and so what the sandbox's uid 65534 is outside: ours, except as root when all that
    is bound is reachable by 65534 (then 65534: an unprivileged uid outside too)."""
    uid = os.geteuid()
    if uid != 0:
        return uid
    layout = python_layout()
    sources = [layout.executable, layout.stdlib, layout.numpy, layout.libpython, layout.numpy_libs,
               str(Path(__file__).with_name("_runner.py")), tempfile.gettempdir()]
    sources += [p for p in SYSTEM_LIBS if os.path.isdir(p) and not os.path.islink(p)]
    return SANDBOX_UID if all(reachable_by_others(p) for p in sources if p) else 0


def popen_user() -> dict:
    """Extra ``subprocess.Popen`` arguments that start bwrap as :func:`host_uid` (none when that is us)."""
    uid = host_uid()
    if uid == os.geteuid():
        return {}
    return {"user": uid, "group": uid, "extra_groups": []}


def prepare_iodir(iodir: str) -> None:
    """Let the uid bwrap runs as reach the io dir, and its private parent, read the input files (whatever the
    umask made of them) and write the output files; inside, the files are bound read-only or cannot be replaced."""
    uid = host_uid()
    if uid != os.geteuid():
        os.chown(os.path.dirname(iodir), uid, uid)
        os.chown(iodir, uid, uid)
        for name in INPUT_FILES + OUTPUT_FILES:
            if os.path.isfile(os.path.join(iodir, name)):
                os.chown(os.path.join(iodir, name), uid, uid)


def _memfd(data: bytes) -> int:
    fd = os.memfd_create("tenfold-seccomp", 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def command(iodir: str, runner: str, env: dict, seccomp: bool = True, tmp_bytes: int = TMP_BYTES,
            program: list[str] | None = None, work_bytes: int = WORK_BYTES) -> tuple[list[str], list[int]]:
    """``(argv, fds_to_pass)`` that run ``runner`` inside bwrap on the files of ``iodir`` (:data:`INPUT_FILES`,
    :data:`OUTPUT_FILES`, those present; seen in ``/opt/io``), in an empty ``/sandbox`` of ``work_bytes``.

    ``program`` replaces the runner's arguments (used by :func:`probe`). The caller passes the fds to
    ``subprocess.Popen(pass_fds=...)`` and closes them afterwards. Raises :class:`IsolationUnavailable`.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise IsolationUnavailable("bubblewrap (bwrap) is not installed")
    layout = python_layout()
    argv = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID),
            "--gid", str(SANDBOX_UID), "--hostname", "sandbox", "--die-with-parent", "--new-session", "--clearenv"]
    inside_env = dict(env, HOME=INSIDE_WORK, TMPDIR="/tmp")
    if layout.libpython:
        inside_env["LD_LIBRARY_PATH"] = f"{INSIDE_PYTHON}/lib"
    for key, value in inside_env.items():
        argv += ["--setenv", key, value]
    # /proc read-only as a whole: bwrap covers only /proc/sys when it is writable as a directory, and a uid that
    # maps to root outside may write root's sysctl files (kernel.core_pattern among them) without any capability
    # /dev read-only too: bwrap makes it (and /dev/shm) a tmpfs without a size, whose only limit would be half the
    # host's memory, outside RLIMIT_AS; its device nodes (/dev/null, ...) stay writable
    argv += ["--proc", "/proc", "--remount-ro", "/proc", "--dev", "/dev", "--remount-ro", "/dev",
             "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    for path in SYSTEM_LIBS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--ro-bind-try", LD_CACHE, LD_CACHE]
    argv += ["--ro-bind", layout.executable, layout.inside_executable,
             "--ro-bind", layout.stdlib, layout.inside_stdlib]
    site = os.path.join(layout.stdlib, "site-packages")
    if os.path.isdir(site):  # the base installation's own packages: hidden
        argv += ["--tmpfs", f"{layout.inside_stdlib}/site-packages", "--remount-ro", f"{layout.inside_stdlib}/site-packages"]
    if layout.libpython:
        argv += ["--ro-bind", layout.libpython, f"{INSIDE_PYTHON}/lib/{os.path.basename(layout.libpython)}"]
    argv += ["--ro-bind", layout.numpy, f"{INSIDE_LIB}/numpy"]
    if layout.numpy_libs:
        argv += ["--ro-bind", layout.numpy_libs, f"{INSIDE_LIB}/numpy.libs"]
    argv += ["--ro-bind", runner, INSIDE_RUNNER, "--size", str(work_bytes), "--perms", "0700", "--tmpfs", INSIDE_WORK]
    for names, how in ((INPUT_FILES, "--ro-bind"), (OUTPUT_FILES, "--bind")):
        for name in names:
            if os.path.isfile(os.path.join(iodir, name)):
                argv += [how, os.path.join(iodir, name), f"{INSIDE_IO}/{name}"]
    argv += ["--chdir", INSIDE_WORK, "--remount-ro", "/"]
    fds = []
    bpf = seccomp_filter() if seccomp else None
    if bpf:
        fds.append(_memfd(bpf))
        argv += ["--add-seccomp-fd", str(fds[-1])]
    argv += ["--", layout.inside_executable, "-I", "-S", "-B"]
    argv += program if program is not None else [INSIDE_RUNNER, INSIDE_IO, INSIDE_LIB]
    return argv, fds


def read_roots() -> list[str]:
    """Paths a program may read inside the namespaces (anything else it opens is counted as reading outside)."""
    return [INSIDE_PYTHON, INSIDE_LIB, os.path.dirname(INSIDE_RUNNER), INSIDE_WORK, "/tmp", "/dev", *SYSTEM_LIBS]


def write_roots() -> list[str]:
    return [INSIDE_WORK, "/tmp"]


@functools.lru_cache(maxsize=1)
def probe() -> tuple[str | None, str]:
    """Try the whole set-up once: ``(label, "")`` where it works, ``(None, why)`` where it does not.

    The label is ``"namespaces+seccomp"`` or ``"namespaces"`` (bwrap works but no seccomp filter could be
    built or loaded). Cached for the life of the process.
    """
    if not sys.platform.startswith("linux"):
        return None, f"Linux namespaces do not exist on {sys.platform}"
    check = ["-c", f"import sys; sys.path.append({INSIDE_LIB!r}); import numpy; numpy.ones(2).sum()"]
    why = ""
    for seccomp in (True, False):
        if seccomp and seccomp_filter() is None:
            continue
        with tempfile.TemporaryDirectory(prefix="tenfold-sandbox-probe-") as tmp:
            io = os.path.join(tmp, "io")
            os.mkdir(io, 0o700)
            try:
                argv, fds = command(io, str(Path(__file__).with_name("_runner.py")), {"PATH": "/usr/bin"}, seccomp,
                                    program=check)
                prepare_iodir(io)
            except IsolationUnavailable as exc:
                return None, str(exc)
            try:
                done = subprocess.run(argv, pass_fds=fds, stdin=subprocess.DEVNULL, capture_output=True, timeout=60,
                                      **popen_user())
            except (OSError, subprocess.TimeoutExpired) as exc:
                done, why = None, f"bwrap did not start ({exc.__class__.__name__}: {exc})"
            finally:
                for fd in fds:
                    os.close(fd)
        if done is not None and done.returncode == 0:
            return ("namespaces+seccomp" if seccomp else "namespaces"), ""
        if done is not None:
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            why = lines[-1].strip() if lines else f"bwrap exited with code {done.returncode}"
    return None, why or "bwrap failed"
