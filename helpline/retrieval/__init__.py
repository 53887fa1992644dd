"""Loaders, chunking, embedder, vector store, sync and search over the knowledge base."""

from pathlib import Path

#: The bundled sample help centre (articles and QUESTIONS.yaml).
SAMPLE_KB = Path(__file__).parent / "sample_kb"
