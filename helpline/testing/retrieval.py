"""Contract tests every VectorStore must pass (haystack-style: subclass and override the fixture).

class TestMyStore(VectorStoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        return MyStore(tmp_path)
"""

from __future__ import annotations

import pytest

from helpline.platform.schemas import Chunk


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
    """What the knowledge base relies on from a store."""

    @pytest.fixture
    def store(self):  # type: ignore[no-untyped-def]
        raise NotImplementedError("override the `store` fixture")

    def test_upsert_then_query_returns_nearest_first_with_metadata(self, store) -> None:  # type: ignore[no-untyped-def]
        store.upsert([make_chunk(0), make_chunk(1)], [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
        hits = store.query(unit(0.1, 1, 0, 0), k=2)
        assert [h.chunk.chunk_id for h in hits] == ["doc#1", "doc#0"]
        assert hits[0].score > hits[1].score
        assert hits[0].chunk.title == "Title doc" and hits[0].chunk.section == "Section"
        assert hits[0].chunk.text == "passage 1 of doc" and hits[0].chunk.content_hash == "h1"

    def test_upsert_same_id_replaces_instead_of_duplicating(self, store) -> None:  # type: ignore[no-untyped-def]
        store.upsert([make_chunk(0)], [unit(1, 0, 0, 0)])
        store.upsert([make_chunk(0, text="new text")], [unit(0, 1, 0, 0)])
        chunks = store.chunks()
        assert [c.text for c in chunks] == ["new text"]
        assert store.query(unit(0, 1, 0, 0), k=5)[0].score == pytest.approx(1.0, abs=1e-4)

    def test_delete_removes_only_named_chunks_and_ignores_unknown_ids(self, store) -> None:  # type: ignore[no-untyped-def]
        store.upsert([make_chunk(0), make_chunk(1)], [unit(1, 0, 0, 0), unit(0, 1, 0, 0)])
        store.delete(["doc#0", "missing#9"])
        assert [c.chunk_id for c in store.chunks()] == ["doc#1"]
        store.delete([])
        assert store.count() == 1

    def test_access_filter_excludes_internal_chunks(self, store) -> None:  # type: ignore[no-untyped-def]
        store.upsert(
            [make_chunk(0, access="internal"), make_chunk(1, access="public")],
            [unit(1, 0, 0, 0), unit(0, 1, 0, 0)],
        )
        hits = store.query(unit(1, 0, 0, 0), k=5, where={"access": "public"})
        assert [h.chunk.access for h in hits] == ["public"]
        both = store.query(unit(1, 0, 0, 0), k=5, where={"access": {"$in": ["public", "internal"]}})
        assert [h.chunk.chunk_id for h in both] == ["doc#0", "doc#1"]
        assert [c.chunk_id for c in store.chunks(where={"access": "internal"})] == ["doc#0"]

    def test_query_on_empty_store_returns_nothing(self, store) -> None:  # type: ignore[no-untyped-def]
        assert store.query(unit(1, 0, 0, 0), k=3) == []
        assert store.chunks() == []

    def test_listing_and_deleting_go_beyond_one_page(self, store) -> None:  # type: ignore[no-untyped-def]
        chunks = [make_chunk(n) for n in range(5003)]  # ChromaStore reads and deletes in pages of 5000
        store.upsert(chunks, [unit(1, n % 7 + 1, 0, 0) for n in range(len(chunks))])
        assert len({c.chunk_id for c in store.chunks()}) == 5003
        store.delete([c.chunk_id for c in chunks[:5002]])
        assert [c.chunk_id for c in store.chunks()] == ["doc#5002"]
