"""Incremental sync: add, update, delete, no-op, and recovery from a sync killed at any step."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.platform.registry import Registry
from helpline.platform.schemas import Document
from helpline.retrieval.ingest.loaders import load_directory
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.testing import FakeEmbedder, InMemoryStore

LONG = " ".join(f"Sentence {i} about parcels and refunds." for i in range(40))


def doc(doc_id: str, text: str, access: str = "public") -> Document:
    return Document(doc_id=doc_id, title=doc_id.title(), text=text, access=access)  # type: ignore[arg-type]


V1 = [doc("a", "Alpha article about returns."), doc("b", LONG), doc("c", "Gamma article about fees.")]
# b shrinks (its extra chunks must go), c is removed, d is new, a is unchanged.
V2 = [doc("a", "Alpha article about returns."), doc("b", "Beta is short now."), doc("d", "Delta about vouchers.")]


def open_kb(tmp_path: Path, store: InMemoryStore, embedder: FakeEmbedder | None = None) -> KnowledgeBase:
    """A knowledge base as a new process would open it: same store and files, fresh objects."""
    return KnowledgeBase(
        store=store,
        embedder=embedder or FakeEmbedder(),
        chunk_size=200,
        chunk_overlap=20,
        registry=Registry(tmp_path / "registry.sqlite"),
        records=RecordManager(tmp_path / "records.sqlite"),
        index_dir=tmp_path / "bm25",
    )


def snapshot(store: InMemoryStore) -> dict[str, tuple[str, str]]:
    return {c.chunk_id: (c.text, c.content_hash) for c in store.chunks()}


def test_first_sync_adds_everything_and_records_a_version(tmp_path: Path) -> None:
    kb = open_kb(tmp_path, InMemoryStore())
    report = kb.sync(V1)
    assert sorted(report.added) == ["a", "b", "c"] and report.chunks_embedded == kb.store.count() > 3
    assert report.version is not None and report.version.added == 3
    assert report.version.content_hash == kb.fingerprint()


def test_second_identical_sync_embeds_nothing_and_records_no_version(tmp_path: Path) -> None:
    store = InMemoryStore()
    open_kb(tmp_path, store).sync(V1)
    embedder = FakeEmbedder()
    report = open_kb(tmp_path, store, embedder).sync(V1)
    assert report.unchanged == 3 and report.chunks_embedded == 0 and embedder.calls == []
    assert report.version is None
    assert len(Registry(tmp_path / "registry.sqlite").kb_versions()) == 1


def test_sync_updates_changed_deletes_removed_adds_new(tmp_path: Path) -> None:
    store = InMemoryStore()
    open_kb(tmp_path, store).sync(V1)
    embedder = FakeEmbedder()
    report = open_kb(tmp_path, store, embedder).sync(V2)
    assert (report.added, report.updated, report.deleted, report.unchanged) == (["d"], ["b"], ["c"], 1)
    assert {c.doc_id for c in store.chunks()} == {"a", "b", "d"}
    assert [c.chunk_id for c in store.chunks() if c.doc_id == "b"] == ["b#0"]  # stale b chunks are gone
    embedded = [t for call in embedder.calls for t in call]
    assert not any("Alpha" in t for t in embedded)  # the unchanged document was not re-embedded
    version = Registry(tmp_path / "registry.sqlite").kb_versions()[-1]
    assert (version.added, version.updated, version.deleted) == (1, 1, 1)


def test_changing_only_access_counts_as_a_change(tmp_path: Path) -> None:
    kb = open_kb(tmp_path, InMemoryStore())
    kb.sync([doc("a", "Secret steps.")])
    kb.sync([doc("a", "Secret steps.", access="internal")])
    assert kb.search("secret steps", k=5, role="customer") == []


def test_add_without_delete_missing_keeps_other_documents(tmp_path: Path) -> None:
    kb = open_kb(tmp_path, InMemoryStore())
    kb.sync(V1)
    kb.sync([doc("d", "Delta about vouchers.")], delete_missing=False)
    assert {d.doc_id for d in kb.documents()} == {"a", "b", "c", "d"}


def test_remove_deletes_documents_and_rejects_unknown_ids(tmp_path: Path) -> None:
    from helpline.platform.errors import NotFoundError

    kb = open_kb(tmp_path, InMemoryStore())
    kb.sync(V1)
    report = kb.remove(["c"])
    assert report.deleted == ["c"] and report.version is not None and report.version.deleted == 1
    assert "c" not in {c.doc_id for c in kb.store.chunks()}
    assert all(h.chunk.doc_id != "c" for h in kb.search("gamma fees", k=5, mode="bm25"))
    with pytest.raises(NotFoundError, match="nope"):
        kb.remove(["a", "nope"])
    assert "a" in {d.doc_id for d in kb.documents()}


def test_bm25_index_is_persisted_and_follows_changes_made_by_another_process(tmp_path: Path) -> None:
    store = InMemoryStore()
    reader = open_kb(tmp_path, store)
    reader.sync(V1)
    assert reader.search("gamma fees", k=1, mode="bm25")[0].chunk.doc_id == "c"
    open_kb(tmp_path, store).sync(V2)  # another process (e.g. `helpline kb sync`) changes the KB
    hits = reader.search("delta vouchers", k=1, mode="bm25")
    assert hits and hits[0].chunk.doc_id == "d"
    assert all(h.chunk.doc_id != "c" for h in reader.search("gamma fees", k=5, mode="bm25"))


def test_embedder_change_reembeds_everything(tmp_path: Path) -> None:
    store = InMemoryStore()
    open_kb(tmp_path, store).sync(V1)
    other = FakeEmbedder(dimension=64)
    other.name = "another-embedder"
    report = open_kb(tmp_path, store, other).sync(V1)
    assert sorted(report.updated) == ["a", "b", "c"]


def test_store_built_before_the_ledger_is_adopted_without_reembedding(tmp_path: Path) -> None:
    store = InMemoryStore()
    KnowledgeBase(store=store, embedder=FakeEmbedder(), chunk_size=200, chunk_overlap=20).sync(V1)  # no ledger file
    embedder = FakeEmbedder()
    report = open_kb(tmp_path, store, embedder).sync(V1)
    assert report.unchanged == 3 and embedder.calls == []


# crash recovery -----------------------------------------------------------------------------


class Crash(BaseException):
    """Stands for kill -9: nothing after it runs (BaseException, so no `except Exception` catches it)."""


class CrashingStore(InMemoryStore):
    """Dies on the n-th call of one of its methods, before that call has any effect."""

    def __init__(self, method: str, n: int) -> None:
        super().__init__()
        self.method, self.n, self.calls = method, n, 0

    def arm(self, method: str, n: int) -> None:
        self.method, self.n, self.calls = method, n, 0

    def _tick(self, method: str) -> None:
        if method == self.method:
            self.calls += 1
            if self.calls == self.n:
                raise Crash(f"killed during {method} #{self.n}")

    def upsert(self, chunks, vectors) -> None:  # type: ignore[no-untyped-def]
        self._tick("upsert")
        super().upsert(chunks, vectors)

    def delete(self, chunk_ids) -> None:  # type: ignore[no-untyped-def]
        self._tick("delete")
        super().delete(chunk_ids)


def expected_after_v2(tmp_path: Path) -> dict[str, tuple[str, str]]:
    store = InMemoryStore()
    open_kb(tmp_path / "clean", store).sync(V2)
    return snapshot(store)


@pytest.mark.parametrize(
    "method,n",
    [("upsert", 1), ("upsert", 2), ("delete", 1), ("delete", 2), ("delete", 3), ("delete", 4)],
)
def test_sync_killed_at_any_store_step_is_completed_by_the_next_sync(tmp_path: Path, method: str, n: int) -> None:
    (tmp_path / "clean").mkdir()
    store = CrashingStore("none", 0)
    open_kb(tmp_path, store).sync(V1)
    store.arm(method, n)
    with pytest.raises(Crash):
        open_kb(tmp_path, store).sync(V2)
    store.arm("none", 0)
    report = open_kb(tmp_path, store).sync(V2)
    assert snapshot(store) == expected_after_v2(tmp_path)  # no duplicates, nothing lost, nothing stale
    assert all(d.state == "ok" for d in open_kb(tmp_path, store).documents())
    assert report.version is not None  # the interrupted changes are recorded as a version once
    versions = Registry(tmp_path / "registry.sqlite").kb_versions()
    assert len(versions) == 2
    assert (versions[-1].added, versions[-1].updated, versions[-1].deleted) == (1, 1, 1)
    hits = open_kb(tmp_path, store).search("delta vouchers", k=1, mode="bm25")
    assert hits[0].chunk.doc_id == "d"  # the BM25 index matches the store again


@pytest.mark.parametrize("step", ["commit", "forget", "begin_delete"])
def test_sync_killed_around_ledger_writes_is_completed(tmp_path: Path, step: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "clean").mkdir()
    store = InMemoryStore()
    open_kb(tmp_path, store).sync(V1)

    def die(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise Crash(step)

    with monkeypatch.context() as m:
        m.setattr(RecordManager, step, die)
        with pytest.raises(Crash):
            open_kb(tmp_path, store).sync(V2)
    open_kb(tmp_path, store).sync(V2)
    assert snapshot(store) == expected_after_v2(tmp_path)


def test_killed_first_sync_of_new_document_still_counts_it_as_added(tmp_path: Path) -> None:
    store = CrashingStore("delete", 1)  # dies after upserting a's chunks, before its stale-chunk cleanup
    with pytest.raises(Crash):
        open_kb(tmp_path, store).sync([doc("a", "Alpha.")])
    store.arm("none", 0)
    report = open_kb(tmp_path, store).sync([doc("a", "Alpha.")])
    assert report.added == ["a"] and store.count() == 1


def test_folder_sync_keeps_what_a_broken_file_held_and_refuses_to_empty_the_base(tmp_path: Path) -> None:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "returns.md").write_text("# Returns\n\nReturn any item within 30 days for a refund.\n")
    (folder / "fees.md").write_text("# Fees\n\nThere is no fee for standard delivery.\n")
    (folder / "vouchers.md").write_text("# Vouchers\n\nVouchers last one year.\n")
    kb = open_kb(tmp_path, InMemoryStore())
    report, failures = kb.sync_folder(folder)
    assert sorted(report.added) == ["fees", "returns", "vouchers"] and failures == []

    # An edit breaks fees.md (now binary) and vouchers.md is removed: fees stays as it was, vouchers goes.
    (folder / "fees.md").write_bytes(b"\x00\x01\x02 not text \xff\xfe")
    (folder / "vouchers.md").unlink()
    report, failures = kb.sync_folder(folder)
    assert report.deleted == ["vouchers"] and report.kept == ["fees"]
    assert [f.doc_id for f in failures] == ["fees"]
    assert "no fee for standard delivery" in kb.search("delivery fee", k=1)[0].chunk.text
    with pytest.raises(DataError, match="a rebuild would drop them"):
        kb.sync_folder(folder, rebuild=True)

    # A folder with no readable article (a wrong path, a failed export) would delete everything: refused.
    (folder / "returns.md").unlink()
    with pytest.raises(DataError, match=r"no readable article .*would delete all 2 documents"):
        kb.sync_folder(folder)
    assert sorted(r.doc_id for r in kb.documents()) == ["fees", "returns"]


# a folder sync changes only what came from that folder --------------------------------------------


def articles(tmp_path: Path, name: str, **texts: str) -> Path:
    folder = tmp_path / name
    folder.mkdir(exist_ok=True)
    for doc_id, text in texts.items():
        (folder / f"{doc_id}.md").write_text(f"# {doc_id.title()}\n\n{text}\n")
    return folder


def test_folder_sync_deletes_only_documents_that_came_from_that_folder(tmp_path: Path) -> None:
    kb = open_kb(tmp_path, InMemoryStore())
    kb.sync([doc("gift", "Gift cards never expire.", access="internal")], delete_missing=False, origin="upload")
    help_centre = articles(tmp_path, "help", fees="No fee for standard delivery.", vouchers="Vouchers last a year.")
    staff_wiki = articles(tmp_path, "wiki", escalation="Escalate fraud to the risk team.")
    kb.sync_folder(help_centre)
    kb.sync_folder(staff_wiki)
    (help_centre / "vouchers.md").unlink()
    report, _ = kb.sync_folder(help_centre)
    assert report.deleted == ["vouchers"]
    origins = {r.doc_id: r.origin for r in kb.documents()}
    assert origins == {
        "gift": "upload",
        "fees": f"folder:{help_centre.resolve()}",
        "escalation": f"folder:{staff_wiki.resolve()}",
    }
    report, _ = kb.sync_folder(help_centre, rebuild=True)  # a rebuild re-embeds the folder's own documents only
    assert report.added == ["fees"] and report.deleted == [] and {r.doc_id for r in kb.documents()} == set(origins)


def test_an_empty_folder_deletes_nothing_it_did_not_bring(tmp_path: Path) -> None:
    kb = open_kb(tmp_path, InMemoryStore())
    kb.sync([doc("gift", "Gift cards never expire.")], delete_missing=False, origin="upload")
    empty = tmp_path / "empty"
    empty.mkdir()
    report, failures = kb.sync_folder(empty)
    assert (report.deleted, failures, [r.doc_id for r in kb.documents()]) == ([], [], ["gift"])


def test_a_ledger_from_before_origins_keeps_uploads_and_lets_the_folder_claim_its_files(tmp_path: Path) -> None:
    folder = articles(tmp_path, "help", fees="No fee for standard delivery.", old="An old policy.")
    store = InMemoryStore()
    before = open_kb(tmp_path, store)
    before.sync(load_directory(folder)[0])
    upload = Document(doc_id="gift", title="Gift", text="Gift cards.", source="upload:staff:1")
    before.sync([upload], delete_missing=False)
    before.records.close()
    _drop_origin_column(tmp_path / "records.sqlite")

    (folder / "old.md").unlink()
    kb = open_kb(tmp_path, store)
    report, _ = kb.sync_folder(folder)
    assert report.deleted == ["old"]
    assert {r.doc_id: r.origin for r in kb.documents()} == {"fees": f"folder:{folder.resolve()}", "gift": ""}


def _drop_origin_column(path: Path) -> None:
    """Make ``path`` a ledger as written before documents recorded their origin."""
    db = sqlite3.connect(path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(documents)")]
    if "origin" in columns:
        db.execute("ALTER TABLE documents DROP COLUMN origin")
    db.commit()
    db.close()


def test_an_embedder_change_reembeds_documents_the_folder_does_not_hold(tmp_path: Path) -> None:
    store = InMemoryStore()
    kb = open_kb(tmp_path, store)
    kb.sync([doc("gift", "Gift cards never expire.")], delete_missing=False, origin="upload")
    folder = articles(tmp_path, "help", fees="No fee for standard delivery.")
    kb.sync_folder(folder)
    other = FakeEmbedder()
    other.name = "another-embedder"
    open_kb(tmp_path, store, other).sync_folder(folder)
    embedded = [text for call in other.calls for text in call]
    assert any("Gift cards never expire" in t for t in embedded) and any("standard delivery" in t for t in embedded)
