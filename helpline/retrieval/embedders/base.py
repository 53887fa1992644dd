"""Embedders: the Protocol every embedder satisfies, the sentence-transformers one, and a disk cache."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

from helpline.platform.lazy_imports import require


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into unit-length vectors."""

    name: str

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...

    def embed_query(self, text: str) -> list[float]: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded from a local folder (never from a hub), fp32 on CPU."""

    def __init__(self, model_path: str | Path, *, name: str = "", batch_size: int = 32) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "retrieval")
        self.name = name or Path(model_path).name
        self.batch_size = batch_size
        self._model = st.SentenceTransformer(str(model_path), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]


class LazyEmbedder:
    """Loads the real embedder on first use, so commands that only list or delete stay fast."""

    def __init__(self, name: str, load: Callable[[], Embedder]) -> None:
        self.name = name
        self._load = load
        self._inner: Embedder | None = None

    @property
    def inner(self) -> Embedder:
        if self._inner is None:
            self._inner = self._load()
        return self._inner

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self.inner.embed_documents(texts) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return self.inner.embed_query(text)


class CachedEmbedder:
    """Wraps an embedder with an on-disk cache keyed by (embedder name, text).

    Evaluation re-embeds the same corpora run after run; the cache makes reruns cost nothing.
    Each batch is committed as it is computed, so an interrupted run keeps what it finished.
    """

    def __init__(self, inner: Embedder, path: str | Path, *, batch_size: int = 256) -> None:
        self.inner = inner
        self.name = inner.name
        self.batch_size = batch_size
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=60)
        self._db.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        self.hits = 0
        self.misses = 0

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.name}\0{text}".encode()).hexdigest()[:32]

    def embed_documents(self, texts: list[str], progress: object | None = None) -> list[list[float]]:
        np = require("numpy", "retrieval")
        keys = [self._key(t) for t in texts]
        found: dict[str, list[float]] = {}
        for i in range(0, len(keys), 900):  # SQLite's bound-parameter limit
            part = keys[i : i + 900]
            rows = self._db.execute(
                f"SELECT key, vec FROM vectors WHERE key IN ({','.join('?' * len(part))})", part
            ).fetchall()
            found.update((k, np.frombuffer(v, dtype=np.float32).tolist()) for k, v in rows)
        todo = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items())
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        for i in range(0, len(todo), self.batch_size):
            batch = todo[i : i + self.batch_size]
            vectors = self.inner.embed_documents([t for _, t in batch])
            with self._db:
                self._db.executemany(
                    "INSERT OR REPLACE INTO vectors VALUES (?, ?)",
                    [(k, np.asarray(v, dtype=np.float32).tobytes()) for (k, _), v in zip(batch, vectors)],
                )
            found.update((k, v) for (k, _), v in zip(batch, vectors))
            if callable(progress):
                progress(len(batch))
        return [found[k] for k in keys]

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
