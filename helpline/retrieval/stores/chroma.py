"""Chroma, embedded (PersistentClient) or as a server (HttpClient), storing our own vectors."""

from __future__ import annotations

from pathlib import Path

from helpline.platform.errors import ConfigError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Chunk, ScoredChunk

_META_FIELDS = ("doc_id", "title", "section", "source", "access", "content_hash")
# Chroma's default search breadth (ef=10) misses true neighbours: dense nDCG@10 on SciFact was 0.645 with it
# and 0.651 with exact search. 128 recovers that at well under a millisecond more per query.
_PAGE = 5000  # rows per get/delete call ("too many SQL variables" above ~30k)
_HNSW = {"hnsw:space": "cosine", "hnsw:search_ef": 128}


class ChromaStore:
    """A Chroma collection with cosine distance; scores are ``1 - distance``."""

    def __init__(self, client: object, collection: str) -> None:
        self._client = client
        self._collection = client.get_or_create_collection(  # type: ignore[attr-defined]
            collection, metadata=_HNSW, embedding_function=None
        )

    @classmethod
    def embedded(cls, path: str | Path, collection: str) -> ChromaStore:
        chromadb = require("chromadb", "retrieval")
        settings = chromadb.config.Settings(anonymized_telemetry=False)
        return cls(chromadb.PersistentClient(path=str(path), settings=settings), collection)

    @classmethod
    def server(cls, host: str, port: int, collection: str) -> ChromaStore:
        chromadb = require("chromadb", "retrieval")
        settings = chromadb.config.Settings(anonymized_telemetry=False)
        try:
            client = chromadb.HttpClient(host=host, port=port, settings=settings)
            client.heartbeat()
        except Exception as e:
            raise ConfigError(
                f"cannot reach the Chroma server at {host}:{port} ({e})",
                hint="start it with `chroma run --path DIR --port PORT` or set retrieval.store=embedded",
            ) from e
        return cls(client, collection)

    def upsert(self, chunks: list[Chunk], vectors: list[list[float]]) -> None:
        if not chunks:
            return
        self._collection.upsert(
            ids=[c.chunk_id for c in chunks],
            embeddings=vectors,
            documents=[c.text for c in chunks],
            metadatas=[{f: getattr(c, f) for f in _META_FIELDS} for c in chunks],
        )

    def query(self, vector: list[float], *, k: int, where: dict | None = None) -> list[ScoredChunk]:
        if self._collection.count() == 0:
            return []
        result = self._collection.query(
            query_embeddings=[vector],
            n_results=k,
            where=where or None,
            include=["documents", "metadatas", "distances"],
        )
        return [
            ScoredChunk(chunk=_chunk(cid, doc, meta), score=1.0 - dist)
            for cid, doc, meta, dist in zip(
                result["ids"][0], result["documents"][0], result["metadatas"][0], result["distances"][0]
            )
            if meta is not None  # deleted while the query ran (a sync on another thread): gone, not an error
        ]

    def delete(self, chunk_ids: list[str]) -> None:
        for start in range(0, len(chunk_ids), _PAGE):
            self._collection.delete(ids=chunk_ids[start : start + _PAGE])

    def chunks(self, where: dict | None = None) -> list[Chunk]:
        """Every stored chunk (matching ``where``), read in pages: Chroma's SQLite caps one query's size."""
        out: list[Chunk] = []
        while True:
            page = self._collection.get(
                where=where or None, include=["documents", "metadatas"], limit=_PAGE, offset=len(out)
            )
            out.extend(_chunk(c, d, m) for c, d, m in zip(page["ids"], page["documents"], page["metadatas"]))
            if len(page["ids"]) < _PAGE:
                return out

    def count(self) -> int:
        return self._collection.count()


def _chunk(chunk_id: str, text: str, meta: dict) -> Chunk:
    return Chunk(chunk_id=chunk_id, text=text, **{f: meta.get(f, "") for f in _META_FIELDS})
