"""Retrieval meets long context (Xu et al., 2023): chunk, embed, index, read."""
import lazy_loader as _lazy

# The public API, imported on first use: `import tenfold.retrieval` (and building the CLI) stays cheap.
__getattr__, __dir__, __all__ = _lazy.attach(__name__, submod_attrs={
    "chunking": ["Chunk", "Chunker", "chunk"],
    "embedder": ["Embedder", "TruncationWarning", "UnknownTextWarning"],
    "index": ["VectorIndex"],
    "reader": ["Answer", "Reader"],
    "retriever": ["METHODS", "Hit", "Retriever"],
})
