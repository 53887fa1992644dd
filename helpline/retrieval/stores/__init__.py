"""Vector stores behind one small Protocol."""

from helpline.retrieval.stores.protocol import VectorStore

__all__ = ["VectorStore"]
