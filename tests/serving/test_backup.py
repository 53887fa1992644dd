"""`helpline backup` / `helpline restore` over a workspace with a real embedded Chroma index (fake embedder):
what the manifest lists, that a restored copy works where it lands, and every refusal that keeps a workspace
or a damaged backup from being used."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpline.platform.context import Context
from helpline.platform.errors import ConfigError, DataError
from helpline.platform.registry import Registry
from helpline.platform.schemas import Document
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval.factory import index_lock_path, open_knowledge_base
from helpline.retrieval.index_lock import IndexBusyError, IndexLock
from helpline.serving import backup as backup_module
from helpline.serving.backup import backup_workspace, restore_workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import GatewayStore
from helpline.testing import FakeEmbedder

DOCS = [
    Document(doc_id="returns", title="Returns", text="Return any item within 30 days for a refund."),
    Document(doc_id="fees", title="Fees", text="Standard delivery costs 4.95; express costs 12.90."),
]


def _settings(root: Path) -> Settings:
    return Settings(workspace=root)


@pytest.fixture
def source(tmp_path: Path) -> dict:
    """A workspace: registry (one model inside it, one outside), gateway keys and a turn, an indexed knowledge
    base, plus what a backup leaves out (logs, a half-written model, a link out of the workspace)."""
    ctx = Context(_settings(tmp_path / "ws"))
    ws = ctx.workspace
    kb = open_knowledge_base(ctx, embedder=FakeEmbedder())
    kb.sync(DOCS)
    kb.close()
    kb.records.close()  # its last connection folds the ledger's log in: not in the middle of a test's copy
    (ws.models / "tiny").mkdir()
    (ws.models / "tiny" / "weights.bin").write_bytes(os.urandom(4096))
    (tmp_path / "outside").mkdir()
    ctx.registry.register_model("tiny", kind="base", path=ws.models / "tiny")
    ctx.registry.register_model("elsewhere", kind="base", path=tmp_path / "outside")
    store = GatewayStore(gateway_db(ws))
    key, _ = store.create_key("customer", name="alice")
    store.record_turn(
        response_id="r1", conversation_id="c1", at=time.time(), key_id=1, role="customer", model="helpline-support",
        served_model="tiny", adapter=None, answer="Return it within 30 days.", abstained=0, latency_ms=1.0,
        messages=[{"role": "user", "content": "How do I return an item?"}], passages=[],
    )  # fmt: skip
    (ws.logs / "gateway.log").write_text("log line\n")
    (ws.models / "next.partial").mkdir()
    (ws.models / "next.partial" / "weights.bin").write_bytes(b"half")
    (ws.datasets / "outside-link").symlink_to(tmp_path / "outside")
    return {"ctx": ctx, "ws": ws, "key": key, "tmp": tmp_path}


def _backup(source: dict, name: str = "backup") -> tuple[Path, dict]:
    dest = source["tmp"] / name
    return dest, backup_workspace(source["ws"], dest, settings=source["ctx"].settings)


def test_the_manifest_lists_every_file_with_its_size_and_sha256_and_what_was_left_out(source: dict) -> None:
    dest, manifest = _backup(source)
    paths = {f["path"] for f in manifest["files"]}

    assert {"registry.sqlite", "gateway.sqlite", "models/tiny/weights.bin"} <= paths
    assert "indexes/chroma/chroma.sqlite3" in paths and any(p.endswith("records.sqlite") for p in paths)
    assert any("/bm25/" in p for p in paths)
    assert not any(p.startswith("logs/") or ".partial" in p or p.endswith((".lock", "-wal", "-shm")) for p in paths)
    assert manifest["skipped"] == [{"path": "datasets/outside-link", "reason": "symbolic link"}]
    assert manifest["models_outside_workspace"] == ["elsewhere"]
    assert manifest["registry_schema"] == 2 and manifest["helpline_version"] and manifest["created_at"] > 0
    assert manifest["index"] == "writer lock held"
    weights = next(f for f in manifest["files"] if f["path"] == "models/tiny/weights.bin")
    assert weights["size"] == 4096
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert not [p for p in dest.parent.iterdir() if p.name.startswith(".backup")]  # no partial folder left


def test_a_restored_workspace_has_the_keys_conversations_index_and_models_where_it_lands(source: dict) -> None:
    dest, _ = _backup(source)
    target = source["tmp"] / "restored" / "ws"
    result = restore_workspace(dest, target, settings=source["ctx"].settings)

    assert result["workspace"] == str(target) and result["models_outside_workspace"] == ["elsewhere"]
    store = GatewayStore(gateway_db(Workspace.at(target)))
    assert store.lookup(source["key"]) is not None and store.turn("r1")["answer"] == "Return it within 30 days."
    registry = Registry(Workspace.at(target).registry_db)
    assert registry.get_model("tiny").path == str(target / "models" / "tiny")  # moved with the workspace
    assert registry.get_model("elsewhere").path == str(source["tmp"] / "outside")
    kb = open_knowledge_base(Context(_settings(target)), embedder=FakeEmbedder())
    assert kb.search("how do I return an item", k=1)[0].chunk.doc_id == "returns"
    assert sorted(r.doc_id for r in kb.documents()) == ["fees", "returns"]
    assert not (target / "logs" / "gateway.log").exists()


def test_a_tampered_file_fails_the_restore_naming_it_and_nothing_is_restored(source: dict) -> None:
    dest, _ = _backup(source)
    weights = dest / "workspace" / "models" / "tiny" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF
    weights.write_bytes(bytes(data))
    target = source["tmp"] / "restored"

    with pytest.raises(DataError) as err:
        restore_workspace(dest, target, settings=source["ctx"].settings)
    assert "models/tiny/weights.bin" in err.value.message and "does not match its manifest" in err.value.message
    assert "nothing was replaced" in str(err.value.hint)
    assert not target.exists() and not [p for p in target.parent.iterdir() if ".restore-" in p.name]


def test_a_file_missing_from_the_backup_fails_the_restore(source: dict) -> None:
    dest, _ = _backup(source)
    (dest / "workspace" / "gateway.sqlite").unlink()
    with pytest.raises(DataError, match=r"lacks gateway\.sqlite"):
        restore_workspace(dest, source["tmp"] / "restored", settings=source["ctx"].settings)


def test_a_manifest_naming_a_path_outside_the_backup_is_refused(source: dict) -> None:
    dest, manifest = _backup(source)
    manifest["files"].append({"path": "../../etc/passwd", "size": 1, "sha256": "0" * 64})
    (dest / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match="outside the backup"):
        restore_workspace(dest, source["tmp"] / "restored", settings=source["ctx"].settings)


def test_a_backup_from_a_newer_registry_schema_is_refused(source: dict) -> None:
    dest, manifest = _backup(source)
    (dest / "manifest.json").write_text(json.dumps({**manifest, "registry_schema": 99}))
    with pytest.raises(ConfigError, match="schema version 99"):
        restore_workspace(dest, source["tmp"] / "restored", settings=source["ctx"].settings)


def test_restore_refuses_a_non_empty_folder_unless_forced(source: dict) -> None:
    dest, _ = _backup(source)
    target = source["tmp"] / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    settings = source["ctx"].settings

    with pytest.raises(ConfigError) as err:
        restore_workspace(dest, target, settings=settings)
    assert "not empty" in err.value.message and "--force" in str(err.value.hint)
    assert (target / "notes.txt").read_text() == "mine"

    restore_workspace(dest, target, settings=settings, force=True)
    assert not (target / "notes.txt").exists() and (target / "registry.sqlite").is_file()
    assert not [p for p in target.parent.iterdir() if ".replaced-" in p.name]


def test_an_empty_folder_is_restored_into_without_force(source: dict) -> None:
    dest, _ = _backup(source)
    target = Workspace.at(source["tmp"] / "fresh").ensure().root  # folders only, no file
    restore_workspace(dest, target, settings=source["ctx"].settings)
    assert (target / "gateway.sqlite").is_file()


def test_a_forced_restore_of_a_damaged_backup_keeps_the_workspace_it_would_replace(source: dict) -> None:
    dest, _ = _backup(source)
    (dest / "workspace" / "registry.sqlite").write_bytes(b"not a database")
    target = source["tmp"] / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(DataError):
        restore_workspace(dest, target, settings=source["ctx"].settings, force=True)
    assert (target / "notes.txt").read_text() == "mine"


def test_a_forced_restore_over_a_workspace_a_gateway_serves_is_refused(source: dict) -> None:
    dest, _ = _backup(source)
    settings = _settings(source["tmp"] / "live")
    restore_workspace(dest, settings.workspace, settings=settings)
    served = open_knowledge_base(Context(settings), embedder=FakeEmbedder(), serving=True)
    try:
        with pytest.raises(IndexBusyError) as err:
            restore_workspace(dest, settings.workspace, settings=settings, force=True)
        assert "stop the gateway" in str(err.value.hint)
        assert (settings.workspace / "registry.sqlite").is_file()
    finally:
        served.close()


def test_backup_refuses_a_destination_inside_the_workspace_or_one_that_holds_files(source: dict) -> None:
    settings = source["ctx"].settings
    with pytest.raises(ConfigError, match="inside the workspace"):
        backup_workspace(source["ws"], source["ws"].root / "backups" / "one", settings=settings)
    dest, _ = _backup(source)
    with pytest.raises(ConfigError, match="not empty"):
        backup_workspace(source["ws"], dest, settings=settings)


def test_with_the_gateway_database_on_postgresql_a_backup_is_refused_until_it_is_backed_up_elsewhere(
    source: dict,
) -> None:
    url = "postgresql://helpline:s3cret@postgres:5432/helpline"
    settings = source["ctx"].settings.model_copy(update={"database_url": url})
    with pytest.raises(ConfigError, match="on PostgreSQL") as refused:
        backup_workspace(source["ws"], source["tmp"] / "backup", settings=settings)
    assert "pg_dump" in (refused.value.hint or "") and "--database-elsewhere" in (refused.value.hint or "")
    assert "s3cret" not in str(refused.value) and not (source["tmp"] / "backup").exists()

    manifest = backup_workspace(source["ws"], source["tmp"] / "backup", settings=settings, database_elsewhere=True)
    assert "s3cret" not in json.dumps(manifest)
    assert manifest["settings"]["database_url"] == "postgresql+psycopg://helpline:***@postgres:5432/helpline"
    assert manifest["gateway_database"].startswith("not in the backup: PostgreSQL")


def test_the_backup_holds_the_index_writer_lock_while_it_copies(source: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    lock_path = index_lock_path(source["ctx"].settings, source["ws"])
    seen: list[bool] = []
    copy = backup_module._copy_tree

    def copy_and_try_to_write(root: Path, into: Path):
        with IndexLock(lock_path).attempt() as could_write:  # what a `kb sync` would try
            seen.append(could_write)
        return copy(root, into)

    monkeypatch.setattr(backup_module, "_copy_tree", copy_and_try_to_write)
    _backup(source)
    assert seen == [False]


def test_while_a_gateway_serves_the_index_the_backup_is_taken_from_an_unchanged_index(source: dict) -> None:
    served = open_knowledge_base(source["ctx"], embedder=FakeEmbedder(), serving=True)
    try:
        _, manifest = _backup(source)
    finally:
        served.close()
    assert manifest["index"] == "served by a gateway: unchanged during the copy"


def _writing_during_copies(monkeypatch: pytest.MonkeyPatch, ws: Workspace, times: int) -> list[int]:
    """Make the first ``times`` copies each see a knowledge-base write land (as a gateway's admin sync would)."""
    copies: list[int] = []
    copy = backup_module._copy_tree

    def copy_while_written(root: Path, into: Path):
        result = copy(root, into)
        copies.append(1)
        if len(copies) <= times:
            (ws.indexes / "chroma" / f"segment-{len(copies)}.bin").write_bytes(b"new vectors")
        return result

    monkeypatch.setattr(backup_module, "_copy_tree", copy_while_written)
    return copies


def test_a_copy_during_which_the_index_changed_is_taken_again(source: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    copies = _writing_during_copies(monkeypatch, source["ws"], times=1)
    _, manifest = _backup(source)
    assert len(copies) == 2 and "indexes/chroma/segment-1.bin" in {f["path"] for f in manifest["files"]}


def test_a_backup_is_refused_when_the_index_changes_during_every_copy(
    source: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    _writing_during_copies(monkeypatch, source["ws"], times=99)
    with pytest.raises(IndexBusyError) as err:
        _backup(source)
    assert "changed during each of 3 copies" in err.value.message and "segment-" in err.value.message
    assert "run the backup again" in str(err.value.hint)
    assert not [p for p in source["tmp"].iterdir() if p.name.startswith((".backup", "backup"))]
