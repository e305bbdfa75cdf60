"""Retrieval meets long context (Xu et al., 2023): chunk, embed, index, read."""
from tenfold.retrieval.chunking import Chunk, Chunker, chunk
from tenfold.retrieval.embedder import Embedder, TruncationWarning, UnknownTextWarning
from tenfold.retrieval.index import VectorIndex
from tenfold.retrieval.reader import Answer, Reader
from tenfold.retrieval.retriever import METHODS, Hit, Retriever

__all__ = ["METHODS", "Answer", "Chunk", "Chunker", "Embedder", "Hit", "Reader", "Retriever", "TruncationWarning",
           "UnknownTextWarning", "VectorIndex", "chunk"]
