"""One writer per index: a serving gateway holds its knowledge base's index; other processes may read it,
and a process that wants to write it is told to go through the gateway instead."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.platform.schemas import Document
from helpline.platform.settings import Settings
from helpline.retrieval.factory import index_lock_path, open_knowledge_base
from helpline.retrieval.index_lock import IndexBusyError, IndexLock
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.testing import FakeEmbedder, InMemoryStore

DOCS = [Document(doc_id="returns", title="Returns", text="Return any item within 30 days for a refund.")]

#: A stand-in for a running gateway: holds the lock until its stdin closes.
HOLDER = """
import sys
from helpline.retrieval.index_lock import IndexLock
lock = IndexLock(sys.argv[1])
lock.hold("gateway")
print("held", flush=True)
sys.stdin.read()
"""


def kb_over(tmp_path: Path, store: InMemoryStore, lock: IndexLock) -> KnowledgeBase:
    return KnowledgeBase(
        store=store,
        embedder=FakeEmbedder(),
        chunk_size=200,
        chunk_overlap=20,
        records=RecordManager(tmp_path / "records.sqlite"),
        index_dir=tmp_path / "bm25",
        lock=lock,
    )


def folder_of_articles(tmp_path: Path) -> Path:
    folder = tmp_path / "articles"
    folder.mkdir()
    (folder / "fees.md").write_text("# Fees\n\nNo fee for standard delivery.\n")
    return folder


def test_another_process_cannot_write_an_index_a_running_gateway_holds(tmp_path: Path) -> None:
    lock_file = tmp_path / "writer.lock"
    kb = kb_over(tmp_path, InMemoryStore(), IndexLock(lock_file))
    kb.sync(DOCS)
    gateway = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert gateway.stdout is not None and gateway.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError) as busy:
            kb.sync_folder(folder_of_articles(tmp_path))
        assert f"pid {gateway.pid}" in busy.value.message and "gateway" in busy.value.message
        assert "POST /admin/kb/sync" in str(busy.value.hint) and "stop the gateway" in str(busy.value.hint)
        with pytest.raises(IndexBusyError):
            kb.remove(["returns"])
        assert kb.search("return an item", k=1)[0].chunk.doc_id == "returns"  # reading is not blocked
        assert [r.doc_id for r in kb.documents()] == ["returns"]
    finally:
        assert gateway.stdin is not None
        gateway.stdin.close()
        gateway.wait(10)
    report, _ = kb.sync_folder(tmp_path / "articles")  # the gateway is gone: writing works again
    assert report.added == ["fees"]


def test_the_holder_writes_and_a_gateway_waits_for_a_writer_to_finish(tmp_path: Path) -> None:
    lock_file = tmp_path / "writer.lock"
    serving = kb_over(tmp_path, InMemoryStore(), IndexLock(lock_file))
    assert serving.lock is not None and serving.lock.serve()
    assert serving.sync(DOCS).added == ["returns"]  # the holder itself writes (the admin API's syncs)
    serving.close()
    writing, done = threading.Event(), threading.Event()

    def sync_elsewhere() -> None:
        with IndexLock(lock_file).writing("helpline kb sync"):
            writing.set()
            done.wait(10)

    sync = threading.Thread(target=sync_elsewhere)
    sync.start()
    writing.wait(10)
    with pytest.raises(IndexBusyError, match="helpline kb sync"):
        IndexLock(lock_file).serve(wait_s=0.3)
    threading.Timer(0.3, done.set).start()  # the sync ends while the gateway waits
    assert IndexLock(lock_file).serve(wait_s=10)
    sync.join(10)


def test_a_second_gateway_on_the_same_index_serves_it_read_only(tmp_path: Path) -> None:
    lock_file = tmp_path / "writer.lock"
    first = kb_over(tmp_path, InMemoryStore(), IndexLock(lock_file))
    assert first.lock is not None and first.lock.serve()
    first.sync(DOCS)
    second = kb_over(tmp_path, InMemoryStore(), IndexLock(lock_file))
    assert second.lock is not None and second.lock.serve(wait_s=0) is False
    with pytest.raises(IndexBusyError, match="held by a running gateway"):
        second.remove(["returns"])
    assert [r.doc_id for r in second.documents()] == ["returns"]


def test_the_gateways_knowledge_base_holds_the_workspace_index(tmp_path: Path) -> None:
    ctx = Context(Settings(workspace=tmp_path / "ws"))
    served = open_knowledge_base(ctx, embedder=FakeEmbedder(), serving=True)
    served.sync(DOCS)
    cli = open_knowledge_base(ctx, embedder=FakeEmbedder())
    assert index_lock_path(ctx.settings, ctx.workspace).is_file()
    with pytest.raises(IndexBusyError, match="gateway"):
        cli.sync_folder(folder_of_articles(tmp_path))
    assert [r.doc_id for r in cli.documents()] == ["returns"]  # `helpline kb list` still works
    served.close()
    assert cli.sync_folder(tmp_path / "articles")[0].added == ["fees"]
