"""`helpline conversations erase` and `purge`: counts printed, the dry run changes nothing, the reviewed examples
of an erased customer go and everyone else's stay, and purge needs a retention period."""

from __future__ import annotations

import json
import time

import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import GatewayStore

DAY = 86400.0


def _turn(store: GatewayStore, rid: str, key_id: int, question: str, *, at: float | None = None) -> None:
    store.record_turn(
        response_id=rid, conversation_id=f"c-{rid}", at=at or time.time(), key_id=key_id, role="customer",
        model="helpline-support", served_model="fake", adapter=None, answer="an answer", abstained=1,
        latency_ms=1.0, messages=[{"role": "user", "content": question}], passages=[{"doc_id": "returns"}],
    )  # fmt: skip


def _two_customers(ws: Workspace) -> GatewayStore:
    store = GatewayStore(gateway_db(ws))
    store.create_key("customer", name="alice")
    store.create_key("customer", name="bob")
    _turn(store, "a1", 1, "Alice Smith's parcel never came")
    _turn(store, "a2", 1, "Alice again")
    _turn(store, "b1", 2, "Bob's question")
    store.add_feedback("a1", rating="down", comment="useless", correction="Here is the answer.", key_id=3)
    reviewed = ws.datasets / "reviewed" / "reviewed.jsonl"
    reviewed.parent.mkdir(parents=True)
    rows = [{"messages": [], "corrected_answer": "x", "response_id": rid} for rid in ("a1", "b1")]
    reviewed.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return store


def test_erase_prints_its_counts_and_removes_the_customers_reviewed_examples(workspace: Workspace) -> None:
    store = _two_customers(workspace)
    result = CliRunner().invoke(app, ["conversations", "erase", "--customer", "1", "--json"])

    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert (out["turns"], out["feedback"], out["comments"], out["corrections"]) == (2, 1, 1, 1)
    assert out["reviewed_examples"] == 1 and out["dry_run"] is False and "backups" in out["not_erased"]
    assert [t["response_id"] for t in store.turns()] == ["b1"]
    lines = (workspace.datasets / "reviewed" / "reviewed.jsonl").read_text().splitlines()
    assert [json.loads(line)["response_id"] for line in lines] == ["b1"]
    entry = store.audit_log()[0]
    assert entry["action"] == "conversations.erase" and entry["detail"]["reviewed_examples"] == 1
    assert "Alice" not in json.dumps(store.audit_log())


def test_an_erase_dry_run_counts_and_changes_nothing(workspace: Workspace) -> None:
    store = _two_customers(workspace)
    reviewed = (workspace.datasets / "reviewed" / "reviewed.jsonl").read_text()
    result = CliRunner().invoke(app, ["conversations", "erase", "--customer", "1", "--dry-run"])

    assert result.exit_code == 0, result.output
    assert "would erase: 2 turns" in result.output and "1 reviewed examples" in result.output
    assert len(store.turns()) == 3 and (workspace.datasets / "reviewed" / "reviewed.jsonl").read_text() == reviewed
    assert store.audit_log()[0]["action"] == "key.create"


def test_erase_needs_one_customer_and_refuses_an_unknown_one(workspace: Workspace) -> None:
    _two_customers(workspace)
    result = CliRunner().invoke(app, ["conversations", "erase"])
    assert isinstance(result.exception, ConfigError)
    result = CliRunner().invoke(app, ["conversations", "erase", "--customer", "99"])
    assert isinstance(result.exception, NotFoundError) and "keys list" in str(result.exception.hint)


def test_purge_removes_turns_past_the_retention_period(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    store = GatewayStore(gateway_db(workspace))
    _turn(store, "old", 1, "old question", at=time.time() - 100 * DAY)
    _turn(store, "new", 1, "new question")

    refused = CliRunner().invoke(app, ["conversations", "purge"])
    assert isinstance(refused.exception, ConfigError) and "retention_days" in str(refused.exception.hint)
    monkeypatch.setenv("HELPLINE_GATEWAY__RETENTION_DAYS", "90")
    dry = CliRunner().invoke(app, ["conversations", "purge", "--dry-run", "--json"])
    assert json.loads(dry.stdout)["turns"] == 1 and len(store.turns()) == 2
    result = CliRunner().invoke(app, ["conversations", "purge"])
    assert result.exit_code == 0, result.output
    assert "purged 1 turns older than 90 days" in result.output
    assert [t["response_id"] for t in store.turns()] == ["new"]
