"""Load a float checkpoint straight into int4, one weight at a time (issue 25, resident memory).

Quantising after ``from_pretrained`` holds every float32 weight at once (plus the memory-mapped file): 1.18 GB
peak for the bundled 135M model. Here the model's skeleton is built with ``accelerate.init_empty_weights``
(parameters on the meta device, buffers such as RoPE frequencies real), then each tensor of the safetensors
files is read on its own: a linear weight becomes :class:`~tenfold.models.quantize.Int4Linear` at once and its
float copy is dropped, every other tensor is placed with ``accelerate.utils.set_module_tensor_to_device``. Peak
memory is the quantised model plus one float tensor. A tied output projection shares the embedding's 16-bit
copy (:func:`~tenfold.models.quantize.share_tied_half`), as :func:`~tenfold.models.quantize.quantize_int4`
does after a full load, so both paths give the same model.

:func:`load_int4` returns ``None`` for checkpoints it does not read (no safetensors, keys that do not match the
module names, e.g. a model whose weights transformers renames on load); :func:`tenfold.models.lm.load_lm` then
falls back to a full load followed by :func:`~tenfold.models.quantize.quantize_int4`.

The quantised levels are cached on disk (:mod:`tenfold.models.int4_cache`): a second load of the same checkpoint
reads them instead of quantising again (the bundled model: ~1 s instead of several).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import json
from pathlib import Path

import torch
from torch import nn

from tenfold.models import int4_cache
from tenfold.models.quantize import (GROUP_SIZE, HalfEmbedding, HalfLinear, Int4Linear, check_shape, half_rows,
                                     int4_available, mark_quantized, quantize_groups, share_tied_half,
                                     to_half_linear)


def safetensors_files(source: str | Path) -> list[Path] | None:
    """The checkpoint's safetensors files (one file, or the shards its index names); None when it has none."""
    source = Path(source)
    if (source / "model.safetensors").is_file():
        return [source / "model.safetensors"]
    index = source / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [source / s for s in shards]
    return None


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def _read(path: Path, key: str) -> torch.Tensor:
    """One tensor, backed by the file's memory map: its pages become resident as they are read and are released
    with the tensor (reading every tensor through one open mapping would keep the whole file resident)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return f.get_tensor(key)


@functools.cache
def _malloc_trim():
    """glibc's ``malloc_trim`` or None; looked up once (``find_library`` runs ``ldconfig``: ~6 ms a call)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def _read_half(path: Path, key: str, block_bytes: int = 8 << 20) -> torch.Tensor:
    """A 2-D tensor converted to 16 bits in blocks of rows, each read through its own mapping: the float32 original
    is never resident whole (the bundled model's 113 MB embedding costs 57 MB + one block). float16 when every
    value fits, else bfloat16 (:func:`~tenfold.models.quantize.half_rows` decides for both load paths)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        rows, cols = f.get_slice(key).get_shape()

    def read_rows(start: int, stop: int) -> torch.Tensor:
        with safe_open(str(path), framework="pt") as f:
            return f.get_slice(key)[start:stop]

    return half_rows(rows, read_rows, max(1, block_bytes // max(1, cols * 4)))


def release_freed_memory(collect: bool = True) -> None:
    """Hand memory freed by the C allocator back to the system (glibc's ``malloc_trim``; a no-op elsewhere).

    The float temporaries of quantising come and go in pieces of a few MB that glibc keeps in its heaps;
    without a trim they stay in the process's resident set (200-300 MB more for the bundled model, varying
    from run to run).
    """
    if collect:
        gc.collect()
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def load_int4(source: str | Path, *, dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
              group_size: int = GROUP_SIZE, skip: tuple[str, ...] = ("lm_head",)) -> nn.Module | None:
    """A causal LM from the local checkpoint directory ``source`` with int4 linear layers, or None (see module doc).

    ``dtype``: everything that is not an int4 layer (embeddings, norms, the cache); the output projection named in
    ``skip`` runs with 16-bit weights in a float32 model (tied: shared with the embedding). Raises
    :class:`~tenfold.errors.TenfoldError` when a layer's shape does not fit the int4 kernel (before any weight
    is read).
    """
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    files = safetensors_files(source)
    if files is None or not int4_available():
        return None
    config = AutoConfig.from_pretrained(source)
    with init_empty_weights():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    names |= {n for n, _ in model.named_buffers(remove_duplicate=False)}
    located = [(path, key) for path in files for key in _keys(path)]
    if not located or any(key not in names for _, key in located):
        return None
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    targets = {n for n in linears if n.rpartition(".")[2] not in skip}
    for name in targets:  # every shape before any weight is read
        check_shape(linears[name], group_size, name)
    embedding = model.get_input_embeddings()
    output = model.get_output_embeddings()
    embedding_key = next(n for n, m in model.named_modules() if m is embedding) + ".weight"
    output_name = next((n for n, m in model.named_modules() if m is output), "")
    cache = (int4_cache.Int4WeightCache(int4_cache.cache_file(files, group_size), int4_cache.describe(files))
             if int4_cache.enabled() else None)
    keep = cache is not None and not cache.covers(targets)  # every layer is written when one is missing
    shared_half = (dtype == torch.float32 and getattr(config, "tie_word_embeddings", False)
                   and type(embedding) is nn.Embedding and isinstance(output, nn.Linear) and output.bias is None
                   and output_name.rpartition(".")[2] in skip)
    for path, key in located:
        module_name, _, leaf = key.rpartition(".")
        if key == embedding_key and shared_half:  # one 16-bit table for the tied embedding and lm_head
            table = HalfEmbedding(_read_half(path, key), embedding.padding_idx, torch.float32)
            model.set_input_embeddings(table)
            model.set_output_embeddings(HalfLinear(table.weight.detach()))
            continue
        cached = cache.get(module_name) if cache is not None and module_name in targets and leaf == "weight" else None
        if cached is not None and tuple(cached[0].shape) != tuple(model.get_submodule(module_name).weight.shape):
            cached = None  # not this layer's levels: quantise it from the checkpoint
        tensor = None if cached is not None else _read(path, key)
        if module_name in targets and leaf == "weight":
            linear = model.get_submodule(module_name)
            bias = linear.bias if linear.bias is not None and linear.bias.device.type != "meta" else None
            q, scale_zeros = cached if cached is not None else quantize_groups(tensor, group_size)
            if keep:
                cache.put(module_name, q, scale_zeros, fresh=cached is None)
            layer = Int4Linear.from_quantized(q, scale_zeros, bias, group_size)
            del q, scale_zeros, cached
            parent, _, child = module_name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, layer)
            del linear, bias, layer
            release_freed_memory(collect=False)  # the temporaries now, before the next layer's grow the heap
        elif module_name in targets and leaf == "bias" and isinstance(model.get_submodule(module_name), Int4Linear):
            model.get_submodule(module_name).bias = tensor.to(torch.bfloat16)
        else:
            set_module_tensor_to_device(model, key, "cpu",
                                        value=tensor.to(dtype if tensor.is_floating_point() else tensor.dtype,
                                                        copy=True))
        del tensor
    if getattr(config, "tie_word_embeddings", False):
        out = model.get_output_embeddings()
        if out is not None and out.weight.device.type == "meta":
            out.weight = model.get_input_embeddings().weight
    if any(t.device.type == "meta" for t in [*model.parameters(), *model.buffers()]):
        return None  # a tensor the files did not hold: let from_pretrained decide how to initialise it
    if cache is not None:
        cache.save()
    if dtype == torch.float32:
        share_tied_half(model, skip)
        to_half_linear(model, skip)
    mark_quantized(model, group_size, skip)
    try:
        model.generation_config = GenerationConfig.from_pretrained(source)
    except OSError:
        pass
    model.requires_grad_(False)
    release_freed_memory()
    return model.eval()
