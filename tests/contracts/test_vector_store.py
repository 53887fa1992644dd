"""The VectorStore contract (helpline/retrieval/stores/protocol.py).

What the knowledge base and sync rely on: a query returns at most ``k`` chunks, nearest first, with all
their metadata; upserting an id replaces it; delete removes only the ids named and ignores unknown
ones; the ``access`` filter (equality and ``$in``) keeps internal chunks from customers; an empty store
answers with nothing; listing and deleting work beyond Chroma's page of 5000.

Runs against ``InMemoryStore`` and embedded Chroma in a temporary folder (both default tier: embedded
Chroma loads no model and takes a few seconds), and a Chroma server (integration).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpline.platform.schemas import Chunk
from helpline.retrieval.stores.chroma import ChromaStore
from helpline.retrieval.stores.protocol import VectorStore
from helpline.testing import InMemoryStore


def make_chunk(n: int, *, doc_id: str = "doc", access: str = "public", text: str = "") -> Chunk:
    """A chunk with a predictable id and text."""
    return Chunk(
        chunk_id=f"{doc_id}#{n}",
        doc_id=doc_id,
        title=f"Title {doc_id}",
        text=text or f"passage {n} of {doc_id}",
        section="Section",
        source=f"{doc_id}.md",
        access=access,  # type: ignore[arg-type]
        content_hash=f"h{n}",
    )


def unit(*values: float) -> list[float]:
    """A 4-dimensional unit vector."""
    norm = sum(v * v for v in values) ** 0.5
    return [v / norm for v in values]


class VectorStoreContract:
    """What the knowledge base relies on from a store; subclass and override the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> VectorStore:
        raise NotImplementedError("override the `store` fixture")

    def test_upsert_then_query_returns_nearest_first_with_metadata(self, store: VectorStore) -> None:
        store.upsert([make_chunk(0), make_chunk(1)], [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
        hits = store.query(unit(0.1, 1, 0, 0), k=2)
        assert [h.chunk.chunk_id for h in hits] == ["doc#1", "doc#0"]
        assert hits[0].score > hits[1].score
        assert hits[0].chunk.title == "Title doc" and hits[0].chunk.section == "Section"
        assert hits[0].chunk.text == "passage 1 of doc" and hits[0].chunk.content_hash == "h1"
        assert hits[0].chunk.source == "doc.md" and hits[0].chunk.doc_id == "doc"

    def test_query_returns_the_k_nearest_and_no_more(self, store: VectorStore) -> None:
        store.upsert([make_chunk(n) for n in range(4)], [unit(1, n, 0, 0) for n in range(4)])
        assert [h.chunk.chunk_id for h in store.query(unit(1, 0, 0, 0), k=2)] == ["doc#0", "doc#1"]
        assert len(store.query(unit(1, 0, 0, 0), k=10)) == 4

    def test_upsert_same_id_replaces_instead_of_duplicating(self, store: VectorStore) -> None:
        store.upsert([make_chunk(0)], [unit(1, 0, 0, 0)])
        store.upsert([make_chunk(0, text="new text")], [unit(0, 1, 0, 0)])
        chunks = store.chunks()
        assert [c.text for c in chunks] == ["new text"] and store.count() == 1
        assert store.query(unit(0, 1, 0, 0), k=5)[0].score == pytest.approx(1.0, abs=1e-4)

    def test_upserting_nothing_changes_nothing(self, store: VectorStore) -> None:
        store.upsert([make_chunk(0)], [unit(1, 0, 0, 0)])
        store.upsert([], [])
        assert store.count() == 1

    def test_delete_removes_only_named_chunks_and_ignores_unknown_ids(self, store: VectorStore) -> None:
        store.upsert([make_chunk(0), make_chunk(1)], [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
        store.delete(["doc#0", "missing#9"])
        assert [c.chunk_id for c in store.chunks()] == ["doc#1"]
        store.delete([])
        assert store.count() == 1
        assert [h.chunk.chunk_id for h in store.query(unit(1, 0, 0, 0), k=5)] == ["doc#1"]

    def test_access_filter_excludes_internal_chunks(self, store: VectorStore) -> None:
        store.upsert(
            [make_chunk(0, access="internal"), make_chunk(1, access="public")],
            [unit(1, 0, 0, 0), unit(0, 1, 0, 0)],
        )
        hits = store.query(unit(1, 0, 0, 0), k=5, where={"access": "public"})
        assert [h.chunk.access for h in hits] == ["public"]
        both = store.query(unit(1, 0, 0, 0), k=5, where={"access": {"$in": ["public", "internal"]}})
        assert [h.chunk.chunk_id for h in both] == ["doc#0", "doc#1"]
        assert [c.chunk_id for c in store.chunks(where={"access": "internal"})] == ["doc#0"]

    def test_query_on_empty_store_returns_nothing(self, store: VectorStore) -> None:
        assert store.query(unit(1, 0, 0, 0), k=3) == []
        assert store.chunks() == [] and store.count() == 0

    def test_listing_and_deleting_go_beyond_one_page(self, store: VectorStore) -> None:
        chunks = [make_chunk(n) for n in range(5003)]  # ChromaStore reads and deletes in pages of 5000
        store.upsert(chunks, [unit(1, n % 7 + 1, 0, 0) for n in range(len(chunks))])
        assert len({c.chunk_id for c in store.chunks()}) == 5003 and store.count() == 5003
        store.delete([c.chunk_id for c in chunks[:5002]])
        assert [c.chunk_id for c in store.chunks()] == ["doc#5002"]


class TestInMemoryStore(VectorStoreContract):
    @pytest.fixture
    def store(self) -> VectorStore:
        return InMemoryStore()


@pytest.fixture(scope="module")
def chroma_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder per module: Chroma keeps one client per path, and opening it takes seconds."""
    return tmp_path_factory.mktemp("chroma")


class TestEmbeddedChroma(VectorStoreContract):
    @pytest.fixture
    def store(self, chroma_dir: Path) -> VectorStore:
        return ChromaStore.embedded(chroma_dir, f"contract-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    from helpline.retrieval.stores.chroma_server import ChromaServer, free_port

    root = tmp_path_factory.mktemp("chroma-server")
    with ChromaServer(root / "data", port=free_port(), log=root / "server.log") as server:
        yield server.host, server.port


@pytest.mark.integration
class TestChromaServer(VectorStoreContract):
    @pytest.fixture
    def store(self, chroma_server: tuple[str, int]) -> VectorStore:
        host, port = chroma_server
        return ChromaStore.server(host, port, f"contract-{uuid.uuid4().hex[:8]}")
