"""Erasing one customer's conversations, and purging turns past the retention period (by hand, at gateway
startup and daily): what goes, what stays, and what the audit log keeps of it."""

from __future__ import annotations

import json
import sqlite3
import time
from contextlib import closing
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from helpline.platform.errors import NotFoundError
from helpline.serving.gateway import app as gateway_app
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import Gateway

QUESTION_A = "How do I return an item I bought for Margaret Holloway?"
COMMENT_A = "the label never printed at Holloway Street"
QUESTION_B = "What does express shipping cost?"
DAY = 86400.0


def _ask(gateway: Gateway, role: str, question: str) -> str:
    response = gateway.chat(role, question)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _two_customers(gateway: Gateway) -> dict[str, str]:
    """Customer A: two turns, one rated down with a comment and corrected by staff, one failed request.
    Customer B: one turn rated up."""
    gateway.keys["other"], _ = gateway.store.create_key("customer", name="customer-b")
    a1, a2 = _ask(gateway, "customer", QUESTION_A), _ask(gateway, "customer", QUESTION_A + " Again.")
    b1 = _ask(gateway, "other", QUESTION_B)
    for rid, role, rating, comment in ((a1, "customer", "down", COMMENT_A), (b1, "other", "up", "thanks")):
        body = {"response_id": rid, "rating": rating, "comment": comment}
        assert gateway.client.post("/v1/feedback", json=body, headers=gateway.headers(role)).status_code == 200
    saved = gateway.client.post(
        f"/console/review/{a1}", json={"answer": "Print it again."}, headers=gateway.headers("staff")
    )
    assert saved.status_code == 200, saved.text
    refused = {"response_id": a2, "rating": "Holloway"}  # refused: its error text quotes what was sent
    assert gateway.client.post("/v1/feedback", json=refused, headers=gateway.headers("customer")).status_code == 400
    return {"a1": a1, "a2": a2, "b1": b1}


def _customer_a(gateway: Gateway):
    return gateway.store.lookup(gateway.keys["customer"])


def test_erasing_a_customer_removes_their_turns_feedback_comments_and_corrections_and_counts_them(
    gateway: Gateway,
) -> None:
    ids = _two_customers(gateway)
    counts = gateway.store.erase(_customer_a(gateway), actor="test")

    assert sorted(counts.pop("response_ids")) == sorted([ids["a1"], ids["a2"]])
    assert counts["turns"] == 2 and counts["feedback"] == 2  # the customer's rating and the staff correction
    # the comment counts twice: the review kept it beside the correction
    assert (counts["comments"], counts["corrections"], counts["audit_details"]) == (2, 1, 1)
    assert counts["passages"] >= 2
    assert [t["response_id"] for t in gateway.store.turns()] == [ids["b1"]]  # the other customer is untouched
    assert gateway.store.turn(ids["b1"])["rating"] == "up" and gateway.store.turn(ids["b1"])["comment"] == "thanks"
    assert gateway.store.review_items("all", limit=100) == []
    with pytest.raises(NotFoundError):
        gateway.store.turn(ids["a1"])


def test_the_erasure_is_audited_with_counts_and_no_content(gateway: Gateway) -> None:
    _two_customers(gateway)
    key = _customer_a(gateway)
    assert "Holloway" in json.dumps(gateway.store.audit_log())  # the failed request's error quoted it
    gateway.store.erase(key, actor="cli")

    entry = gateway.store.audit_log()[0]
    assert (entry["actor"], entry["action"], entry["target"]) == ("cli", "conversations.erase", f"key:{key.id}")
    assert entry["detail"]["turns"] == 2
    log = json.dumps(gateway.store.audit_log())
    assert "Holloway" not in log and "Margaret" not in log and "label never printed" not in log


def test_erased_content_is_not_left_in_the_database_files(gateway: Gateway) -> None:
    path = gateway.store.path
    # Another process with the database open (a serving gateway): the write-ahead log is not folded back and
    # deleted when the last connection closes, so its old frames would keep what was erased.
    with closing(sqlite3.connect(path)) as other:
        other.execute("SELECT COUNT(*) FROM conversations").fetchone()
        _two_customers(gateway)
        gateway.store.erase(_customer_a(gateway), actor="test")

        raw = b"".join(p.read_bytes() for p in (path, Path(f"{path}-wal")) if p.exists())
    assert b"Holloway" not in raw and b"Margaret" not in raw
    assert QUESTION_B.encode() in raw  # what stays is still there


def test_a_dry_run_counts_what_an_erasure_would_remove_and_changes_nothing(gateway: Gateway) -> None:
    _two_customers(gateway)
    before, audit = gateway.store.turns(), gateway.store.audit_log()
    counts = gateway.store.erase(_customer_a(gateway), actor="test", dry_run=True)

    assert counts["turns"] == 2 and counts["corrections"] == 1
    assert gateway.store.turns() == before and gateway.store.audit_log() == audit


def test_one_conversation_can_be_erased_by_its_id(gateway: Gateway) -> None:
    ids = _two_customers(gateway)
    conversation = gateway.store.turn(ids["a1"])["conversation_id"]
    counts = gateway.store.erase(conversation, actor="test")

    assert counts["response_ids"] == [ids["a1"]] and counts["turns"] == 1
    assert {t["response_id"] for t in gateway.store.turns()} == {ids["a2"], ids["b1"]}
    assert gateway.store.audit_log()[0]["target"] == f"conversation:{conversation}"


def test_a_key_is_found_by_its_id_the_key_itself_or_its_prefix(gateway: Gateway) -> None:
    key = gateway.keys["customer"]
    record = gateway.store.lookup(key)
    assert record is not None
    for ref in (str(record.id), key, record.prefix):
        assert gateway.store.find_key(ref).id == record.id
    with pytest.raises(NotFoundError):
        gateway.store.find_key("hl-nothere")


# retention ---------------------------------------------------------------------------------------


def _turn_at(store: GatewayStore, response_id: str, at: float, question: str = "old question") -> None:
    store.record_turn(
        response_id=response_id, conversation_id=f"c-{response_id}", at=at, key_id=1, role="customer",
        model="helpline-support", served_model="fake", adapter=None, answer="an answer", abstained=0,
        latency_ms=1.0, messages=[{"role": "user", "content": question}], passages=[],
    )  # fmt: skip


def test_turns_older_than_the_retention_period_go_with_their_feedback_and_newer_ones_stay(tmp_path: Path) -> None:
    store, now = GatewayStore(tmp_path / "gateway.sqlite"), time.time()
    _turn_at(store, "old", now - 40 * DAY)
    _turn_at(store, "new", now - 2 * DAY)
    store.add_feedback("old", rating="down", comment="slow", correction="the right answer", key_id=1)
    store.add_feedback("new", rating="up", key_id=1)

    counts = store.purge_expired(30, actor="test", now=now)

    assert (counts["turns"], counts["feedback"], counts["comments"], counts["corrections"]) == (1, 1, 1, 1)
    assert [t["response_id"] for t in store.turns()] == ["new"] and store.turn("new")["rating"] == "up"
    entry = store.audit_log()[0]
    assert entry["action"] == "conversations.purge" and entry["detail"]["turns"] == 1
    assert store.purge_expired(30, actor="test", now=now)["turns"] == 0
    assert store.audit_log()[0]["id"] == entry["id"]  # a purge that removed nothing is not audited


def _app_with_retention(gateway: Gateway, days: int | None):
    state = gateway.client.app.state
    return create_app(
        pipeline=state.chat_service.pipeline, router=state.router, store=gateway.store, retention_days=days
    )


def test_a_gateway_with_a_retention_period_purges_at_startup(gateway: Gateway) -> None:
    _turn_at(gateway.store, "old", time.time() - 10 * DAY)
    _turn_at(gateway.store, "recent", time.time() - DAY)
    with TestClient(_app_with_retention(gateway, None)):
        assert len(gateway.store.turns()) == 2  # no retention period: everything is kept
    with TestClient(_app_with_retention(gateway, 7)):
        assert [t["response_id"] for t in gateway.store.turns()] == ["recent"]


def test_a_serving_gateway_purges_again_each_period(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_app, "PURGE_EVERY_S", 0.05)  # a day, shortened
    with TestClient(_app_with_retention(gateway, 7)):
        _turn_at(gateway.store, "aged-while-serving", time.time() - 10 * DAY)
        deadline = time.monotonic() + 30
        while gateway.store.turns() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.store.turns() == []
