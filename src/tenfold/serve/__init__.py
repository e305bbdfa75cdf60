"""An OpenAI-compatible server over the sink cache (StreamingLLM's unbounded multi-round setting)."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.serve` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "engine": ["Engine", "GenParams", "Job"],
    "sessions": ["SessionStore"],
})
