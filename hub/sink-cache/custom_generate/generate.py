"""StreamingLLM's attention sinks (Xiao et al. 2023) as a transformers ``custom_generate`` method, from tenfold.

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
