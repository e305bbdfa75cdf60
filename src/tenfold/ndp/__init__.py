"""Neural Developmental Programs (Najarro, Sudhakaran & Risi 2023): networks that grow themselves."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.ndp` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "evolve": ["TrainConfig", "load_run", "train"],
    "growth": ["NDP", "Grown", "NDPConfig"],
    "policy": ["GrownPolicy"],
    "tasks": ["TASKS", "make_task"],
})
