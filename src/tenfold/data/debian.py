"""Fetching files from Debian packages without root: ``apt-get download`` and a .deb reader in Python.

A .deb is an ``ar`` archive whose ``data.tar.*`` member holds the installed files. A fresh
machine may have empty package lists, so a failed download runs ``apt-get update`` once and retries.
"""
from __future__ import annotations

import io
import shutil
import subprocess
import tarfile
from pathlib import Path

from tenfold.errors import TenfoldError


def _run(cmd: list[str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def apt_download(package: str, workdir: str, hint: str = "") -> Path:
    """Download ``package``'s .deb into ``workdir``; return its path (one clear error if impossible)."""
    tail = f"; {hint}" if hint else ""
    if shutil.which("apt-get") is None:
        raise TenfoldError(f"apt-get is not available, so Debian's {package} cannot be fetched{tail}")
    result = _run(["apt-get", "download", package], workdir)
    if result.returncode != 0:
        _run(["apt-get", "update"], workdir)
        result = _run(["apt-get", "download", package], workdir)
    debs = sorted(Path(workdir).glob(f"{package}_*.deb"))
    if result.returncode != 0 or not debs:
        last = (result.stderr or result.stdout).strip().splitlines()
        why = last[-1] if last else f"exit code {result.returncode}"
        raise TenfoldError(f"could not download Debian's {package} ({why}){tail}")
    return debs[-1]


def ar_members(deb: bytes) -> dict[str, bytes]:
    if not deb.startswith(b"!<arch>\n"):
        raise TenfoldError("the downloaded .deb is not an ar archive")
    pos, members = 8, {}
    while pos + 60 <= len(deb):
        header = deb[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = deb[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def deb_files(deb_path: Path, wanted) -> dict[str, bytes]:
    """Contents of the files in ``deb_path`` whose path satisfies ``wanted(path)``: {path: bytes}."""
    members = ar_members(Path(deb_path).read_bytes())
    data_name = next((n for n in members if n.startswith("data.tar")), None)
    if data_name is None:
        raise TenfoldError(f"{deb_path} holds no data.tar member")
    out = {}
    with tarfile.open(fileobj=io.BytesIO(members[data_name]), mode="r:*") as tar:
        for member in tar.getmembers():
            if member.isfile() and wanted(member.name):
                out[member.name] = tar.extractfile(member).read()
    return out
