"""StreamingLLM (Xiao et al., 2023): attention sinks for unbounded streaming with a bounded KV cache."""
from tenfold.streaming.rope import RopeShift
from tenfold.streaming.sink_cache import SinkCache, SinkLayer, enable_streaming, prefill

__all__ = ["RopeShift", "SinkCache", "SinkLayer", "enable_streaming", "prefill"]
