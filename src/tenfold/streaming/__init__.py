"""StreamingLLM (Xiao et al., 2023): attention sinks for unbounded streaming with a bounded KV cache."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.streaming` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "config": ["SinkConfig"],
    "rope": ["RopeShift"],
    "sink_cache": ["SinkCache", "SinkLayer", "enable_streaming", "prefill"],
})
