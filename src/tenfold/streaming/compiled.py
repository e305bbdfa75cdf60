"""A compiled decode step over the ring sink cache (StreamingLLM Sec. 3.2 eviction, one fixed-shape graph).

Decoding one token through transformers' model in eager mode runs thousands of small aten ops and their Python
glue per step; on a laptop CPU that glue costs about as much as the matrix products. Here the same model (its own
modelling code, unchanged) decodes through one graph that ``torch.compile`` (inductor) builds once for a cache of
``num_sinks + window`` columns:

- the keys and values live in the sink cache's own buffers, allocated at full size; each step writes the new token
  into its ring slot and the sinks, rotated to where the query should see them, with one ``index_copy_`` per
  buffer (two writes made inductor copy the whole cache each step);
- positions, the write column, the sinks' rotation and the mask of filled columns are tensors, so one graph serves
  every step, filling or evicting;
- everything that changes shape or happens rarely stays eager: prefill (chunked), re-basing frame positions past
  ``rebase_at`` (exact, as in eager decoding), padded batches and caches not yet holding their sinks.

Integration goes through transformers' public extension points: :class:`RingView` is a ``Cache`` whose ``update``
does the writes, and the attention function tenfold registers (:data:`~tenfold.models.decode_attention.DECODE_ATTENTION`)
reads the mask of filled columns from the step's ``ring_valid`` argument. Every compiled result is tested against
the eager path (tests/streaming/test_compiled.py).
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import time
import types
import warnings
from pathlib import Path

import torch
from transformers.cache_utils import Cache

from tenfold.errors import TenfoldError
from tenfold.models.decode_attention import use_decode_attention
from tenfold.streaming.config import SinkConfig
from tenfold.streaming.sink_cache import HeldElsewhereLayer, SinkCache, enable_streaming, prefill


# inductor notes this while compiling the int4 model's step (bfloat16 kernel inputs beside the float16 lm_head):
# not something a user of chat or serve can act on
warnings.filterwarnings("ignore", message="bf16 and fp16 are mixed in the scheduler node")

ARTEFACTS = "compiled"  # under $TENFOLD_HOME
DEFAULT_OPTIONS: dict = {}  # inductor defaults; cpp_wrapper gained ~8% per token at 2-3x the first compile (g++ -O3 of the wrapper)


def compiler() -> str | None:
    """The C++ compiler inductor will use (``$CXX``, else c++ / g++ / clang++ on the PATH), or None."""
    for name in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def artefact_key(model, size: int) -> dict:
    """What a compiled decode step depends on: the model (its name or path and weights), the cache size, torch's
    version and the CPU's vector level (``torch.backends.cpu.get_cpu_capability()``: AVX512, AVX2, ...)."""
    from tenfold.models.quantize import weights_label

    name = str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
    device = next(model.parameters()).device
    level = torch.backends.cpu.get_cpu_capability() if device.type == "cpu" else torch.cuda.get_device_name(device)
    return {"model": name, "weights": weights_label(model), "cache_size": size, "torch": torch.__version__,
            "vector_level": level, "device": device.type}


def artefact_dir(key: dict) -> Path:
    """``$TENFOLD_HOME/compiled/<readable name>-<hash of key>``: where inductor keeps this step's compiled code."""
    from tenfold import home

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9.]+", "-", Path(key["model"]).name).strip("-")[:40] or "model"
    return Path(home()) / ARTEFACTS / f"{stem}-{key['weights']}-{key['cache_size']}-{digest}"


def cached_artefacts() -> list[dict]:
    """Every compiled decode step kept under ``$TENFOLD_HOME/compiled``: its key, folder and size in bytes."""
    from tenfold import home

    out = []
    root = Path(home()) / ARTEFACTS
    for folder in sorted(root.glob("*")) if root.is_dir() else []:
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        try:
            key = json.loads((folder / "key.json").read_text())
        except (OSError, ValueError):
            key = None
        if not isinstance(key, dict) or not all(isinstance(key.get(k), str) for k in ("model", "weights", "torch", "vector_level")):
            key = {"model": folder.name, "weights": "?", "torch": "?", "vector_level": "?", "unreadable": True}
        if not isinstance(key.get("options"), dict):
            key["options"] = {}
        out.append({**key, "path": str(folder), "bytes": size})
    return out


class RingView(Cache):
    """The sink cache as the compiled step sees it: full-size buffers handed in with each step's ``ring`` argument.

    ``ring`` (a dict, passed to the model's forward and on to ``update``): ``keys`` / ``values`` (lists, one
    (B, H_kv, N, D) buffer per layer, N = num_sinks + window), ``sink_keys`` (list of (B, H_kv, S, D) float32 copies
    of the sinks at positions 0..S-1), ``index`` ((S + 1,) int64: the sinks' columns 0..S-1, then the new token's
    column), ``cos`` / ``sin`` ((rotary_dim,) float32: the rotation that puts the sinks where the query sees them)
    and ``valid`` ((B, N) bool: filled columns).
    """

    def __init__(self, num_layers: int, size: int, num_sinks: int):
        super().__init__(layers=[HeldElsewhereLayer() for _ in range(num_layers)])
        self.size, self.num_sinks = size, num_sinks

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.size - 1

    def get_mask_sizes(self, query_length: int, layer_idx: int = 0) -> tuple[int, int]:
        return self.size, 0

    def get_query_offset(self, layer_idx: int = 0) -> int:
        return self.size - 1  # the one query sits after every column: transformers' causal mask hides nothing

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        ring = (kwargs.get("kwargs") or {}).get("ring")
        keys, values = ring["keys"][layer_idx], ring["values"][layer_idx]
        index = ring["index"]
        if self.num_sinks:
            sinks = _rotate(ring["sink_keys"][layer_idx], ring["cos"], ring["sin"]).to(keys.dtype)
            keys.index_copy_(2, index, torch.cat([sinks, key_states], dim=2))
        else:
            keys.index_copy_(2, index, key_states)
        values.index_copy_(2, index[-1:], value_states)
        return keys, values


def _rotate(keys: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """RoPE rotation of ``keys`` (..., D) float32 by the angle whose cos/sin (rotary_dim,) are given (partial rotary:
    the dimensions past rotary_dim move unchanged)."""
    rot = cos.shape[-1]
    part, rest = keys[..., :rot], keys[..., rot:]
    half = rot // 2
    rotated = torch.cat((-part[..., half:], part[..., :half]), dim=-1)
    out = part * cos + rotated * sin
    return torch.cat((out, rest), dim=-1) if rest.shape[-1] else out


def _decode_forward(model, view, input_ids, position_ids, ring):
    """The step a :class:`CompiledDecoder` compiles: transformers' own forward over the :class:`RingView`."""
    out = model(input_ids=input_ids, position_ids=position_ids, cache=view, use_cache=True, ring=ring,
                ring_valid=ring["valid"], logits_to_keep=1)
    return out.logits[:, -1].float()


_copies = itertools.count()


def _own_copy(fn):
    """``fn`` with a code object of its own: dynamo keeps compiled graphs (and its recompile limit) per code object,
    so each decoder gets its own instead of sharing them with every other decoder in the process."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{next(_copies)}")
    return types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)


class CompiledDecoder:
    """Decode steps of ``model`` over :class:`SinkCache` s of one size through one compiled graph.

    ``step(cache, tokens)`` feeds ``tokens`` ((B,) int64, one per row of ``cache``) and returns (B, vocab) float32
    next-token logits: what ``model(input_ids=tokens[:, None], cache=cache)`` returns, to float rounding (tested to
    1e-4 in NLL in float32; with int4 weights the kernel rounds activations to bfloat16, so results move within that
    rounding). The compiled graph runs when the cache can take it (:meth:`can_compile`), the eager model otherwise.

    ``config``: the sink cache's :class:`~tenfold.streaming.SinkConfig` (its size fixes the graph's shape).
    ``options``: inductor options (default :data:`DEFAULT_OPTIONS`). ``backend``: torch.compile's backend
    ("inductor"; "eager" traces the step without generating code, for tests of its logic).
    Compiled code is kept under :func:`artefact_dir` (``$TENFOLD_HOME/compiled/...``), keyed by :func:`artefact_key`,
    so only the first start pays the compile. Raises TenfoldError for a model with sliding-window layers (not covered
    yet: such models decode eagerly) and when no C++ compiler is found.
    """

    def __init__(self, model, config: SinkConfig | None = None, options: dict | None = None,
                 backend: str = "inductor"):
        config = config if config is not None else SinkConfig()
        self.model = enable_streaming(model)
        layout = model._tenfold_streaming
        if layout.hybrid:
            raise TenfoldError(f"the compiled decode step covers full-attention models; {type(model).__name__} has "
                               "sliding-window layers, so it decodes eagerly")
        try:
            use_decode_attention(model)  # reads the step's mask of filled columns
        except ValueError as exc:
            raise TenfoldError(f"the compiled decode step: {exc}") from None
        if backend == "inductor" and next(model.parameters()).device.type == "cpu" and compiler() is None:
            raise TenfoldError("no C++ compiler found (set CXX or install g++): decoding eagerly")
        self.config, self.layout = config, layout
        self.num_sinks, self.size = config.num_sinks, config.size
        self.view = RingView(len(layout.kinds), self.size, self.num_sinks)
        self.inv_freq = layout.shift.inv_freq.to(next(model.parameters()).device)
        self.options = dict(DEFAULT_OPTIONS if options is None else options) if backend == "inductor" else {}
        self.key = {**artefact_key(model, self.size), "backend": backend, "options": self.options}
        self.directory = artefact_dir(self.key)
        self._graph = torch.compile(_own_copy(_decode_forward), backend=backend, dynamic=False,
                                    options=self.options or None)
        self.compiled_steps = self.eager_steps = 0
        self.compile_seconds: float | None = None

    def warm_up(self, say=None) -> float:
        """Compile now (from the kept artefacts when a previous start left them): one step on a scratch cache.
        ``say(line)`` gets a line before and after. Returns the seconds it took."""
        self._use_directory()
        cached = (self.directory / "ready").exists()
        if say is not None:
            say(f"compiling the decode step ({'from the cache in' if cached else 'first time, kept in'} "
                f"{self.directory}) ...")
        start = time.perf_counter()
        scratch = SinkCache(config=self.config)
        device = self.inv_freq.device
        prefill(self.model, scratch, torch.zeros((1, max(1, self.num_sinks)), dtype=torch.long, device=device))
        self.step(scratch, torch.zeros(1, dtype=torch.long, device=device))
        self.compiled_steps -= 1
        self.compile_seconds = time.perf_counter() - start
        (self.directory / "ready").write_text(f"{self.compile_seconds:.1f}\n")
        if say is not None:
            say(f"decode step compiled in {self.compile_seconds:.0f} s")
        return self.compile_seconds

    def _use_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "key.json").write_text(json.dumps(self.key, indent=1))
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(self.directory / "inductor")

    def can_compile(self, cache: SinkCache, grow: bool = True) -> bool:
        """Whether ``cache`` is in a state the compiled step takes: this size, ring mode (not ``rerotate``), no
        padding and its sinks already held. Anything else decodes eagerly, exactly as without compiling.
        ``grow=False``: only a cache whose buffers already hold all ``size`` columns (the step would otherwise grow
        them, which a caller bounding memory per session, as serve does, has not accounted for)."""
        return (cache.size == self.size and cache.num_sinks == self.num_sinks and not cache.rerotate
                and cache.valid is not None and cache.valid.shape[1] >= self.num_sinks and bool(cache.valid.all())
                and cache.layout is self.layout
                and (grow or all(layer.capacity >= self.size for layer in cache.full_layers)))

    @torch.no_grad()
    def step(self, cache: SinkCache, tokens: torch.Tensor) -> torch.Tensor:
        """Feed ``tokens`` ((B,) or (B, 1) int64) to ``cache``; return (B, vocab) float32 logits of the next token."""
        tokens = tokens.reshape(-1, 1).to(self.inv_freq.device)
        if not self.can_compile(cache):
            self.eager_steps += 1
            return self.model(input_ids=tokens, cache=cache, use_cache=True, logits_to_keep=1).logits[:, -1].float()
        if self.compile_seconds is None:
            self._use_directory()
        position, column, delta, filled = cache.begin_ring_decode(tokens.shape[0])
        layers = cache.full_layers
        device = self.inv_freq.device
        angles = float(delta) * self.inv_freq
        emb = torch.cat((angles, angles))
        index = torch.arange(self.num_sinks + 1, device=device)
        index[-1] = column
        valid = torch.arange(self.size, device=device) < filled
        ring = {"keys": [layer.keys for layer in layers], "values": [layer.values for layer in layers],
                "sink_keys": [layer.sink_keys for layer in layers], "index": index, "cos": emb.cos(),
                "sin": emb.sin(), "valid": valid.expand(tokens.shape[0], -1)}
        self.compiled_steps += 1
        return self._graph(self.model, self.view, tokens, torch.full_like(tokens, position), ring)


def compiled_or_none(model, config: SinkConfig, say, **kwargs) -> CompiledDecoder | None:
    """A :class:`CompiledDecoder`, compiled now, for a CLI (``chat --compile``, ``serve``): ``say(line)`` gets the
    progress lines, or the one line saying why decoding stays eager (then None is returned)."""
    try:
        decoder = CompiledDecoder(model, config, **kwargs)
    except TenfoldError as exc:
        say(f"{exc}")
        return None
    try:
        decoder.warm_up(say=say)
    except OSError as exc:  # an unwritable $TENFOLD_HOME/compiled
        say(f"cannot keep the compiled step in {decoder.directory} ({exc.strerror or exc}): decoding eagerly")
        return None
    except Exception as exc:  # noqa: BLE001 - a broken compiler or toolchain: the eager path still serves
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        say(f"compiling the decode step failed ({type(exc).__name__}: {first}): decoding eagerly")
        return None
    return decoder

