"""A disk cache of int4-quantised weights: loading a checkpoint in int4 a second time skips the quantisation.

Quantising the bundled 135M model's 210 linear weights takes several seconds of CPU on every load, which every
``tenfold serve`` or ``tenfold chat`` start paid. :func:`~tenfold.models.int4_load.load_int4` now keeps the
quantised levels and scales of a checkpoint in ``$TENFOLD_HOME/models/int4/<key>.safetensors`` and reads them back
instead. The key covers what the levels depend on: each weights file's resolved path, size and modification time,
the group size and this cache's format version, so an edited or replaced checkpoint is quantised afresh.

Stored per layer: the levels packed two to a byte (``<layer>.q``: (out_features, in_features / 2) uint8, low
nibble first) and ``<layer>.scale_zeros`` as :func:`~tenfold.models.quantize.quantize_groups` returns them. Not
PyTorch's packed kernel layout, which may differ between CPU instruction sets: the kernel packing runs at load.
Each entry records its checkpoint's files; entries of a checkpoint since removed or changed are deleted when the
next entry is written (:func:`prune`).

The cache is a speed-up, never a source of truth: a file that cannot be read or lacks a layer makes that layer be
quantised from the checkpoint (and the file rewritten); writes go to a temporary file renamed into place, so two
processes loading at once, or an interrupted load, never leave a half file. ``TENFOLD_INT4_CACHE=0`` turns it off.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

FORMAT = 1


def enabled() -> bool:
    """Whether the cache is used (``TENFOLD_INT4_CACHE`` is not "0")."""
    return os.environ.get("TENFOLD_INT4_CACHE", "1") != "0"


def cache_dir() -> Path:
    from tenfold import home

    return Path(home()) / "models" / "int4"


def describe(files: list[Path]) -> list:
    """[resolved path, size, modification time in ns] per file: what a cache entry is valid for."""
    described = []
    for f in files:
        st = Path(f).stat()
        described.append([str(Path(f).resolve()), st.st_size, st.st_mtime_ns])
    return described


def _describe_recorded(recorded: list) -> list | None:
    try:
        return describe([Path(path) for path, _, _ in recorded])
    except (OSError, TypeError, ValueError):
        return None


def cache_file(files: list[Path], group_size: int) -> Path:
    """Where the quantised weights of the checkpoint ``files`` (safetensors) live for ``group_size``."""
    key = hashlib.sha256(json.dumps([FORMAT, group_size, describe(files)]).encode()).hexdigest()[:24]
    return cache_dir() / f"{key}.safetensors"


def prune() -> None:
    """Delete entries whose checkpoint was removed or changed since (they can never be read again), so the cache
    holds at most one entry per live checkpoint and group size (about 0.56 bytes per quantised weight)."""
    from safetensors import safe_open

    for path in cache_dir().glob("*.safetensors"):
        try:
            with safe_open(str(path), framework="pt") as f:
                recorded = json.loads((f.metadata() or {}).get("sources", "null"))
        except Exception:  # noqa: BLE001 - unreadable: nothing could use it
            recorded = None
        if not recorded or _describe_recorded(recorded) != recorded:
            path.unlink(missing_ok=True)


def pack_nibbles(q: torch.Tensor) -> torch.Tensor:
    """Levels (N, K) in 0..15 (any integer dtype, K even) -> (N, K / 2) uint8, column 2j in the low nibble."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


_NIBBLES = torch.tensor([[b & 15, b >> 4] for b in range(256)], dtype=torch.int32)  # byte -> its two levels


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: (N, K / 2) uint8 -> (N, K) int32 (a table lookup per byte: several times
    faster on CPU than shifting, masking and interleaving)."""
    return torch.nn.functional.embedding(packed.int(), _NIBBLES).reshape(packed.shape[0], -1)


class Int4WeightCache:
    """The cached levels of one checkpoint (see module doc). :meth:`get` one layer; :meth:`put` every layer of this
    load; :meth:`save` writes them all when any was quantised afresh (a missing or damaged file is made whole)."""

    def __init__(self, path: Path, sources: list | None = None):
        self.path, self.sources, self.new, self.fresh = path, sources, {}, False
        self._names: set[str] = set()
        if path.is_file():
            try:
                from safetensors import safe_open

                with safe_open(str(path), framework="pt") as f:
                    self._names = set(f.keys())
            except Exception:  # noqa: BLE001 - a damaged cache file is quantised over, never trusted
                self._names = set()

    def covers(self, layers) -> bool:
        """Whether the file holds every one of ``layers`` (then nothing needs to be kept for :meth:`save`)."""
        return all(f"{n}.q" in self._names and f"{n}.scale_zeros" in self._names for n in layers)

    def get(self, layer: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(levels (N, K) int32, scale_zeros) for ``layer`` when the file holds it, else None."""
        if f"{layer}.q" not in self._names or f"{layer}.scale_zeros" not in self._names:
            return None
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt") as f:
                q, scale_zeros = unpack_nibbles(f.get_tensor(f"{layer}.q")), f.get_tensor(f"{layer}.scale_zeros")
        except Exception:  # noqa: BLE001 - a damaged file: dropped, so the next load writes it whole
            self._names = set()
            self.path.unlink(missing_ok=True)
            return None
        return q, scale_zeros.to(torch.bfloat16).contiguous()

    def put(self, layer: str, q: torch.Tensor, scale_zeros: torch.Tensor, fresh: bool) -> None:
        """Keep ``layer``'s levels for :meth:`save`; ``fresh``: quantised in this load (not read from the file)."""
        self.new[f"{layer}.q"] = pack_nibbles(q).contiguous()
        self.new[f"{layer}.scale_zeros"] = scale_zeros.contiguous()
        self.fresh |= fresh

    def save(self) -> None:
        """Write every layer of this load (when any was quantised afresh) atomically; an unwritable home is
        skipped silently: the next load quantises again."""
        if not self.fresh:
            self.new = {}
            return
        from safetensors.torch import save_file

        staging = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            save_file(self.new, str(staging), metadata={"format": str(FORMAT),
                                                        "sources": json.dumps(self.sources)})
            os.replace(staging, self.path)
            prune()
        except OSError:
            staging.unlink(missing_ok=True)
        finally:
            self.new, self.fresh = {}, False
