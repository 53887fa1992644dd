"""BM25 over the stored chunks (bm25s, English stemming and stop words), persisted next to the store.

The vector store is the source of truth. The BM25 index is derived from it and carries the
fingerprint of the chunks it was built from, so an index left behind by an interrupted sync is
detected and rebuilt instead of being searched.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Chunk
from helpline.retrieval.ingest.chunking import content_hash, embedding_text

_POINTER = "bm25.json"


def chunks_fingerprint(chunks: list[Chunk]) -> str:
    """Identifies a set of chunks (ids and content), so derived indexes can tell they are stale."""
    return content_hash("\n".join(sorted(f"{c.chunk_id}:{c.content_hash}" for c in chunks)))


class BM25Index:
    """Lexical search over chunks; results are filtered by the access levels the caller may see."""

    def __init__(self, *, k1: float = 1.2, b: float = 0.75) -> None:
        self.k1, self.b = k1, b
        self.chunk_ids: list[str] = []
        self.access: list[str] = []
        self.fingerprint = chunks_fingerprint([])
        self.chunks: dict[str, Chunk] = {}
        self._retriever = None
        self._masks: dict[tuple[str, ...], object] = {}

    @classmethod
    def build(cls, chunks: list[Chunk], **params: float) -> BM25Index:
        """Index ``chunks`` (their heading context and text)."""
        index = cls(**params)
        index.chunk_ids = [c.chunk_id for c in chunks]
        index.access = [c.access for c in chunks]
        index.fingerprint = chunks_fingerprint(chunks)
        index.chunks = {c.chunk_id: c for c in chunks}
        if chunks:
            bm25s = require("bm25s", "retrieval")
            tokens = bm25s.tokenize(
                [embedding_text(c) for c in chunks], stopwords="en", stemmer=_stemmer(), show_progress=False
            )
            index._retriever = bm25s.BM25(k1=index.k1, b=index.b)
            index._retriever.index(tokens, show_progress=False)
        return index

    def __len__(self) -> int:
        return len(self.chunk_ids)

    def search(self, query: str, *, k: int, access: tuple[str, ...]) -> list[tuple[str, float]]:
        """The best ``k`` (chunk id, score) pairs among chunks whose access level is in ``access``."""
        np = require("numpy", "retrieval")
        if self._retriever is None or not query.strip():
            return []
        bm25s = require("bm25s", "retrieval")
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=_stemmer(), return_ids=False, show_progress=False)[0]
        vocab = self._retriever.vocab_dict
        known = [t for t in tokens if t in vocab]
        if not known:
            return []
        allowed = self._masks.get(access)
        if allowed is None:  # one mask per role, computed once: a Python loop over 100k chunks costs ~10 ms
            allowed = self._masks[access] = np.array([a in access for a in self.access], dtype=np.float32)
        n = min(k, int(allowed.sum()))
        if n == 0:
            return []
        docs, scores = self._retriever.retrieve([known], k=n, weight_mask=allowed, show_progress=False, n_threads=1)
        # The mask zeroes forbidden chunks' scores; the explicit check keeps them out even at score 0.
        return [
            (self.chunk_ids[int(i)], float(s))
            for i, s in zip(docs[0], scores[0])
            if s > 0 and self.access[int(i)] in access
        ]

    # persistence ----------------------------------------------------------------------------

    def save(self, folder: str | Path) -> None:
        """Write the index under ``folder`` atomically: readers see the old index or the new one."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        name = f"bm25-{self.fingerprint}"
        target = folder / name
        tmp = folder / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        if self._retriever is not None:
            self._retriever.save(str(tmp / "index"))
        meta = {
            "chunk_ids": self.chunk_ids,
            "access": self.access,
            "k1": self.k1,
            "b": self.b,
            "chunks": [c.model_dump() for c in self.chunks.values()],
        }
        (tmp / "meta.json").write_text(json.dumps(meta))
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
        pointer_tmp = folder / f".{_POINTER}.tmp"
        pointer_tmp.write_text(json.dumps({"fingerprint": self.fingerprint, "dir": name}))
        os.replace(pointer_tmp, folder / _POINTER)
        for old in folder.glob("bm25-*"):
            if old.name != name:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: str | Path) -> BM25Index | None:
        """The index saved under ``folder``, or None if there is none (or it cannot be read)."""
        folder = Path(folder)
        try:
            pointer = json.loads((folder / _POINTER).read_text())
            meta = json.loads((folder / pointer["dir"] / "meta.json").read_text())
        except (OSError, ValueError, KeyError):
            return None
        index = cls(k1=meta["k1"], b=meta["b"])
        index.chunk_ids, index.access, index.fingerprint = meta["chunk_ids"], meta["access"], pointer["fingerprint"]
        index.chunks = {c["chunk_id"]: Chunk(**c) for c in meta["chunks"]}
        if index.chunk_ids:
            bm25s = require("bm25s", "retrieval")
            index._retriever = bm25s.BM25.load(str(folder / pointer["dir"] / "index"), load_corpus=False)
        return index


def _stemmer():  # type: ignore[no-untyped-def]
    stemmer = require("Stemmer", "retrieval")
    return stemmer.Stemmer("english")
