"""Write ``hub/sink-cache/``: tenfold's sink cache as a transformers ``custom_generate`` repository.

transformers (v5) ships decoding methods and caches as Hub repositories holding ``custom_generate/generate.py``
(``model.generate(..., custom_generate="org/repo" or a local folder, trust_remote_code=True)``). Such a repository
must stand alone, so the two modules the cache is made of (``tenfold/streaming/sink_cache.py`` and ``rope.py``) are
copied into it with their tenfold imports made relative; ``generate.py`` and the README are written here. The copy
is generated, never edited: ``python scripts/export_custom_generate.py`` rewrites it, and
``tests/test_custom_generate.py`` fails when it is out of date.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "src" / "tenfold" / "streaming"
TARGET = ROOT / "hub" / "sink-cache"

HEADER = ("# Generated from tenfold's src/tenfold/streaming/{name} by scripts/export_custom_generate.py: edit the source\n"
          "# there and re-run the script, not this copy.\n")

# (old, new) replacements per file; each old text must be present once, so a change in the source fails loudly here.
EDITS = {
    "sink_cache.py": [
        ("from tenfold.streaming.config import DEFAULT_SINKS, DEFAULT_WINDOW, SinkConfig\n",
         "from .config import DEFAULT_SINKS, DEFAULT_WINDOW, SinkConfig\n"),
        ("from tenfold.streaming.rope import SLIDING, RopeShift, StreamingLayout, check_cache_fits, check_supported\n",
         "from .rope import SLIDING, RopeShift, StreamingLayout, check_cache_fits, check_supported\n"),
        ("module._tenfold_streaming", "module._custom_generate_streaming"),
        ('getattr(model, "_tenfold_streaming", None)', 'getattr(model, "_custom_generate_streaming", None)'),
        ("model._tenfold_streaming = check_supported(model)", "model._custom_generate_streaming = check_supported(model)"),
    ],
    "config.py": [
        ("from tenfold.errors import TenfoldError\n", "from .rope import TenfoldError\n"),
    ],
    "rope.py": [
        ("from tenfold.errors import TenfoldError\nfrom tenfold.models.decode_attention import DECODE_ATTENTION\n",
         "DECODE_ATTENTION = \"tenfold_cpu_decode\"  # tenfold's CPU decode attention, where tenfold registered it\n\n\n"
         "class TenfoldError(ValueError):\n    \"\"\"The model cannot stream with the sink cache.\"\"\"\n\n"),
    ],
}

GENERATE = '''"""StreamingLLM's attention sinks (Xiao et al. 2023) as a transformers ``custom_generate`` method, from tenfold.

    out = model.generate(input_ids, custom_generate="<this repository or folder>", trust_remote_code=True,
                         num_sinks=4, window=1020, max_new_tokens=2000)

The KV cache keeps the first ``num_sinks`` tokens (the attention sinks) and the last ``window`` tokens of each row in
every full-attention layer, in a ring buffer whose keys keep the rotation they were written with (only the sinks are
re-placed each step), so generation goes on past any length with constant memory. Sliding-window layers of hybrid
models keep their own last ``sliding_window`` tokens, as the model was trained.
Prompts longer than the window are streamed through the cache in chunks of ``prefill_chunk`` tokens. Every other
argument is ``generate``'s own (greedy or sampling, streamers, batches with left padding, ``return_dict_in_generate``).
Models: RoPE decoders with full attention (Llama, Mistral, Qwen2/3, Phi-3, SmolLM2, ...) or full + sliding-window
layers (Gemma 2/3, gpt-oss with its learned sinks, Cohere 2, ...); eager or SDPA attention.
"""
from transformers import GenerationMixin

from .sink_cache import SinkCache, enable_streaming


def generate(model, num_sinks: int = 4, window: int = 1020, prefill_chunk: int | None = None, **kwargs):
    """``model.generate(**kwargs)`` with a :class:`SinkCache` of ``num_sinks`` + ``window`` tokens."""
    for name in ("cache", "past_key_values"):
        if kwargs.get(name) is not None:
            raise ValueError(f"custom_generate sink-cache makes its own cache; do not pass {name}")
    kwargs.pop("past_key_values", None)
    kwargs.pop("cache", None)
    config = kwargs.get("generation_config") or model.generation_config  # a field given as a keyword wins
    if kwargs.get("num_beams", getattr(config, "num_beams", 1)) not in (None, 1):
        raise ValueError("beam search is not supported with the sink cache")
    if kwargs.get("use_cache", getattr(config, "use_cache", True)) is False:
        raise ValueError("use_cache=False would decode without the sink cache; leave use_cache on")
    enable_streaming(model)
    cache = SinkCache(num_sinks=num_sinks, window=window, prefill_chunk=prefill_chunk)
    return GenerationMixin.generate(model, cache=cache, **kwargs)
'''

README = '''---
library_name: transformers
tags:
  - custom_generate
---

# Attention sinks (StreamingLLM) for transformers v5: `custom_generate`

Generate past any length with a constant-size KV cache: the cache keeps the first `num_sinks` tokens (the "attention
sinks" of Xiao et al., *Efficient Streaming Language Models with Attention Sinks*, 2023) and the most recent `window`
tokens. Positions are the paper's in-cache positions, kept without re-rotating the window at every step: recent keys
sit in a ring buffer at the rotation they were written with (RoPE only sees distances), the sinks are re-placed from
an fp32 copy, and the window is rotated back once whenever positions grow past a bound. transformers removed its own
`SinkCache` in v5; this repository brings one back the way transformers documents for decoding methods.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
tok = AutoTokenizer.from_pretrained("HuggingFaceTB/SmolLM2-135M-Instruct")
ids = tok("Tell me a very long story.", return_tensors="pt").input_ids
out = model.generate(ids, custom_generate="<org>/<this-repo>", trust_remote_code=True,
                     num_sinks=4, window=1020, max_new_tokens=4000)
```

A local folder works the same way (`custom_generate="path/to/this/folder"`).

## Arguments

| argument | default | meaning |
|---|---|---|
| `num_sinks` | 4 | initial tokens kept forever (the attention sinks) |
| `window` | 1020 | most recent tokens kept; the cache never holds more than `num_sinks + window` |
| `prefill_chunk` | half the window, at most 256 | a prompt longer than the window is streamed through the cache in chunks of this size |

Everything else is `generate`'s own: greedy or sampling, `max_new_tokens`, streamers, batches (left padding),
`return_dict_in_generate` (the returned cache is the sink cache). Not supported: beam search, passing your own cache.

## Models

Decoder-only models with rotary position embeddings, with `eager` or `sdpa` attention:
- full attention (Llama, Mistral, Qwen2/3, Phi-3, SmolLM2, ...): sinks + window in every layer;
- hybrid models with `sliding_attention` layers beside full ones (Gemma 2/3, gpt-oss, Cohere 2, Granite SWA, ...): the
  full layers keep sinks + window, the sliding layers keep their own last `sliding_window` tokens at their true
  distances with their own RoPE base (Gemma 3's local theta), so they see exactly what the model was trained on;
- learned per-head attention sinks (gpt-oss's `sinks` logits) keep working at every step.

Other layer types (`chunked_attention`, `linear_attention`, `mamba`, `conv`, `hybrid`) are refused with one line naming
the type, and so is a model-wide `sliding_window` (Mistral) shorter than `num_sinks + window`.

## Where it comes from

The cache is tenfold's `tenfold.streaming.SinkCache` (a `transformers.Cache` of one `CacheLayerMixin` layer class per
policy, integrated through a forward pre-hook that gives each step its in-cache positions). This folder is generated
from tenfold's source by `scripts/export_custom_generate.py`; tenfold's tests run it from the local path on
SmolLM2-135M-Instruct, on a tiny random Llama and on tiny random Gemma 3 and gpt-oss models.

## Publishing it on the Hub

```bash
hf auth login
hf repos create <org>/sink-cache                # or in the web UI
hf upload <org>/sink-cache hub/sink-cache .     # README.md + custom_generate/
```

(`hf` is huggingface_hub's command line, installed with transformers; it replaced `huggingface-cli`.)

Then `custom_generate="<org>/sink-cache"` with `trust_remote_code=True`; pin a `revision=` to the commit you
reviewed, as for any remote code.
'''

REQUIREMENTS = "transformers>=5\ntorch\n"


def render() -> dict[str, str]:
    """Every file of the repository, by path relative to ``hub/sink-cache``."""
    files = {"README.md": README, "custom_generate/generate.py": GENERATE,
             "custom_generate/requirements.txt": REQUIREMENTS}
    for name, edits in EDITS.items():
        text = (SOURCE / name).read_text(encoding="utf-8")
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"export_custom_generate: {name} no longer contains {old!r} exactly once; "
                                 "update EDITS to match the source")
            text = text.replace(old, new)
        if any(line.lstrip().startswith(("from tenfold", "import tenfold")) for line in text.splitlines()):
            raise SystemExit(f"export_custom_generate: {name} still imports tenfold after the edits")
        files[f"custom_generate/{name}"] = HEADER.format(name=name) + text
    return files


def main() -> int:
    for rel, text in render().items():
        path = TARGET / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
