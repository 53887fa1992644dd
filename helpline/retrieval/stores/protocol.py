"""The interface a vector store offers to the knowledge base."""

from __future__ import annotations

from typing import Protocol

from helpline.platform.schemas import Chunk, ScoredChunk


class VectorStore(Protocol):
    """Stores chunks with their vectors; searches by vector with metadata filters."""

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None: ...

    def query(self, vector: list[float], *, k: int, where: dict | None = None) -> list[ScoredChunk]: ...

    def delete(self, chunk_ids: list[str]) -> None: ...

    def chunks(self, where: dict | None = None) -> list[Chunk]: ...

    def count(self) -> int: ...
