"""Embedders: the Protocol every embedder satisfies, and the sentence-transformers one."""

from __future__ import annotations

import os
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
    """A sentence-transformers model loaded from a local folder (never from a hub)."""

    def __init__(self, model_path: str | Path, *, name: str = "", batch_size: int = 64) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        st = require("sentence_transformers", "retrieval")
        self.name = name or Path(model_path).name
        self.batch_size = batch_size
        self._model = st.SentenceTransformer(str(model_path), device="cpu")

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return vectors.tolist()

    def embed_query(self, text: str) -> list[float]:
        return self.embed_documents([text])[0]
