"""Loaders, chunking, embedder, vector store, sync and search over the knowledge base."""
