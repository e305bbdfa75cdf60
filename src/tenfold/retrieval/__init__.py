"""Retrieval meets long context (Xu et al., 2023): chunk, embed, index, read."""
from tenfold.retrieval.chunking import Chunk, chunk
from tenfold.retrieval.index import VectorIndex
from tenfold.retrieval.reader import Answer, Reader
from tenfold.retrieval.retriever import Embedder, Hit, Retriever

__all__ = ["Answer", "Chunk", "Embedder", "Hit", "Reader", "Retriever", "VectorIndex", "chunk"]
