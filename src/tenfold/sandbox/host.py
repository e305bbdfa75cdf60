"""What a sandboxed program meets of the host: a clean environment, the paths the in-process guard lets it read, and
the removal of the work dir it wrote in."""
from __future__ import annotations

import os
import sys
from pathlib import Path

def _remove_tree(path: Path) -> None:
    """Remove a directory the program wrote in, however deep: shutil.rmtree recurses (RecursionError past about
    a thousand levels, which the program can make with ``dir_fd``), and its paths would outgrow PATH_MAX.
    Here every subdirectory's subdirectories move up into ``path`` (by descriptor, short names) until none is
    left, with two descriptors open at a time; symlinks are removed, never followed. Best effort."""
    import errno

    def chmod(name, fd):  # a directory the program made unreadable (matters when tenfold is not root)
        try:
            os.chmod(name, 0o700, dir_fd=fd) if name else os.chmod(path, 0o700)
        except OSError:
            pass

    def entries(fd):
        with os.scandir(fd) as it:
            return [(e.name, e.is_dir(follow_symlinks=False)) for e in it]

    chmod(None, None)
    try:
        top = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    moved = 0
    try:
        while True:
            subdirs = []
            for name, is_dir in entries(top):
                if is_dir:
                    subdirs.append(name)
                else:
                    os.unlink(name, dir_fd=top)
            if not subdirs:
                break
            for name in subdirs:
                chmod(name, top)
                child = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=top)
                try:
                    for inner, is_dir in entries(child):
                        if not is_dir:
                            os.unlink(inner, dir_fd=child)
                            continue
                        while True:
                            moved += 1
                            try:
                                os.rename(inner, f".rm{moved}", src_dir_fd=child, dst_dir_fd=top)
                                break
                            except OSError as exc:  # a name the program took already: the next one
                                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                                    raise
                finally:
                    os.close(child)
                os.rmdir(name, dir_fd=top)
    except OSError:
        pass  # whatever is left, TemporaryDirectory's own cleanup tries
    finally:
        os.close(top)


def _guard_read_roots() -> list[str]:
    """What a program may read when only the guard stands: the standard library, numpy, the work dir."""
    import importlib.util

    roots = {os.path.realpath(os.path.dirname(os.__file__))}
    roots |= {os.path.realpath(p) for p in sys.path if p.rstrip("/").endswith("lib-dynload")}
    spec = importlib.util.find_spec("numpy")
    if spec is not None and spec.submodule_search_locations:
        numpy_dir = os.path.realpath(list(spec.submodule_search_locations)[0])
        roots |= {numpy_dir, os.path.join(os.path.dirname(numpy_dir), "numpy.libs")}
    return sorted(roots)


def _clean_env(workdir: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
            "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
