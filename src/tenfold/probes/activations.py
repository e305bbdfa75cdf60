"""Residual-stream activations at the last token of an entity name (Gurnee & Tegmark, Sec. 2-3).

For each entity the prompt template is filled in, tokenized with character offsets, and the
hidden state at the token holding the name's last character is taken from every layer
(``output_hidden_states``: the embeddings, then the output of each block; the last one is after
the final norm). Batches are right-padded, whatever the tokenizer's own padding side, so
positions are never shifted. Results are cached on disk (float16) by model, dataset, prompt and
entity list, so fitting probes never re-runs the model.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from tenfold import home
from tenfold.errors import TenfoldError


def fill(template: str, name: str) -> tuple[str, int, int]:
    """The prompt text and the character span [start, end) of ``name`` inside it."""
    if template.count("{name}") != 1:
        raise TenfoldError(f"a prompt template needs exactly one {{name}}: {template!r}")
    before, after = template.split("{name}")
    return before + name + after, len(before), len(before) + len(name)


def last_name_token(offsets: list[tuple[int, int]], start: int, end: int) -> int:
    """Index of the last token that holds character ``end - 1`` (the name's last character; a character
    split into several byte tokens ends at the last of them)."""
    last = end - 1
    covering = [i for i, (a, b) in enumerate(offsets) if a <= last < b]
    if covering:
        return covering[-1]
    # Some tokenizers report a leading space inside the next token's span, or trim it: take the
    # last token that starts inside the name.
    inside = [i for i, (a, b) in enumerate(offsets) if b > a and start <= a < end]
    if not inside:
        raise TenfoldError(f"no token covers the entity at characters {start}..{end}")
    return inside[-1]


def model_key(model) -> str:
    name = getattr(model.config, "_name_or_path", "") or model.config.model_type
    tag = getattr(model, "_tenfold_key", None) or Path(str(name)).name
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)


def cache_path(model, dataset: str, prompt: str, entities: list[str]) -> Path:
    """Where the activations of ``entities`` under ``prompt`` are cached for ``model``: keyed by the model, the
    dataset, the prompt, the entity list and the model's dtype when it is not float32 (a bfloat16 model on a GPU
    gives other numbers than the float32 one; float32 keeps the key it always had)."""
    digest = hashlib.sha1(json.dumps(entities).encode("utf-8")).hexdigest()[:12]
    dtype = getattr(model, "dtype", torch.float32)
    precision = "" if dtype == torch.float32 else f"-{str(dtype).removeprefix('torch.')}"
    return Path(home()) / "probes" / model_key(model) / f"{dataset}-{prompt}-{len(entities)}-{digest}{precision}.npy"


@torch.no_grad()
def extract(model, tokenizer, entities: list[str], template: str = "{name}", batch_size: int = 64,
            progress=None) -> np.ndarray:
    """Activations (N, layers + 1, hidden) at each entity's last name token, float32."""
    if not entities:
        raise TenfoldError("no entities to extract")
    if not getattr(tokenizer, "is_fast", False):
        raise TenfoldError("activation extraction needs a fast tokenizer (character offsets)")
    out = None
    device = next(model.parameters()).device
    for lo in range(0, len(entities), batch_size):
        names = entities[lo : lo + batch_size]
        filled = [fill(template, n) for n in names]
        enc = tokenizer([f[0] for f in filled], return_offsets_mapping=True, add_special_tokens=True)
        rows = [enc["input_ids"][i] for i in range(len(names))]
        where = [last_name_token(enc["offset_mapping"][i], s, e) for i, (_, s, e) in enumerate(filled)]
        width = max(len(r) for r in rows)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], device=device)
        hidden = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False).hidden_states
        pick = torch.tensor(where, device=device)
        # with a device_map the layers (and their hidden states) may sit on several devices: gather on the first
        stacked = torch.stack([h[torch.arange(len(names), device=h.device), pick.to(h.device)].to(device)
                               for h in hidden], dim=1)
        if out is None:
            out = np.empty((len(entities), stacked.shape[1], stacked.shape[2]), dtype=np.float32)
        out[lo : lo + len(names)] = stacked.float().cpu().numpy()
        if progress:
            progress(min(lo + batch_size, len(entities)), len(entities))
    if not np.isfinite(out).all():
        raise TenfoldError("the model produced non-finite activations")
    return out


def cached_extract(model, tokenizer, dataset: str, prompt: str, template: str, entities: list[str],
                   progress=None, refresh: bool = False) -> np.ndarray:
    """:func:`extract`, cached on disk under ``$TENFOLD_HOME/probes/<model>/`` (float16)."""
    path = cache_path(model, dataset, prompt, entities)
    if path.exists() and not refresh:
        return np.load(path).astype(np.float32)
    acts = extract(model, tokenizer, entities, template, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.npy")
    np.save(tmp, acts.astype(np.float16))
    tmp.replace(path)  # atomic: an interrupted run never leaves a truncated cache
    return acts


def random_init_like(model, seed: int = 0):
    """A randomly initialised model of the same architecture (the baseline that must lose), placed as ``model`` is:
    on its device, or for a model loaded with ``device_map="auto"`` spread over the same devices layer by layer
    (``accelerate.dispatch_model`` with its ``hf_device_map``), so a model larger than one GPU gets a baseline
    that fits too."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    from tenfold.devices import model_device

    rand = AutoModelForCausalLM.from_config(model.config).eval()
    spread = getattr(model, "hf_device_map", None) or {}
    if len(set(spread.values())) > 1:
        from accelerate import dispatch_model

        return _keyed(dispatch_model(rand, device_map=spread), model, seed)
    return _keyed(rand.to(model_device(model)), model, seed)  # where the model runs


def _keyed(rand, model, seed: int):
    rand._tenfold_key = model_key(model) + f"-random-init-{seed}"
    return rand
