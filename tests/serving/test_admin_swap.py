"""Admin routes: knowledge-base changes, promotion, rollback, canary share, audit, export."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.serving import routing
from helpline.serving.gateway.config import GatewayLimits
from helpline.serving.routing import canary_bucket
from helpline.testing.serving import Gateway, make_gateway

Q = "How do I return an item?"


def _answer(gw: Gateway, conversation_id: str | None = None) -> str:
    extra = {"conversation_id": conversation_id} if conversation_id else {}
    return gw.chat("customer", Q, **extra).json()["choices"][0]["message"]["content"]


def test_uploaded_document_is_answerable_and_deleted_one_is_gone(gateway: Gateway) -> None:
    doc = {"doc_id": "gift-cards", "title": "Gift cards", "text": "Gift cards never expire and work online."}
    doc["access"] = "public"  # an upload states who may see it
    staff = gateway.headers("staff")
    resp = gateway.client.post("/admin/kb/documents", json={"documents": [doc]}, headers=staff)
    assert resp.status_code == 200 and resp.json()["added"] == ["gift-cards"]
    cited = gateway.chat("customer", "do gift cards expire online?").json()["citations"]
    assert cited[0]["doc_id"] == "gift-cards"
    assert gateway.client.delete("/admin/kb/documents/gift-cards", headers=staff).status_code == 200
    cited = gateway.chat("customer", "do gift cards expire online?").json()["citations"]
    assert all(c["doc_id"] != "gift-cards" for c in cited)
    listed = gateway.client.get("/admin/kb/documents", headers=staff).json()["documents"]
    assert {d["doc_id"] for d in listed} == {"returns", "shipping", "goodwill"}
    assert gateway.client.delete("/admin/kb/documents/gift-cards", headers=staff).status_code == 404
    actions = [(a["action"], a["actor"].split(":")[0]) for a in gateway.store.audit_log()]
    assert ("kb.upload", "staff") in actions and ("kb.delete", "staff") in actions


def test_promote_switches_new_requests_and_rollback_restores(gateway: Gateway) -> None:
    engineer = gateway.headers("engineer")
    assert _answer(gateway) == "answer from fake-base"
    resp = gateway.client.post("/admin/models/promote", json={"name": "fake-adapter"}, headers=engineer)
    assert resp.status_code == 200 and resp.json()["previous"] == "fake-base"
    assert _answer(gateway) == "answer from fake-adapter"
    assert gateway.client.post("/admin/models/rollback", json={}, headers=engineer).status_code == 200
    assert _answer(gateway) == "answer from fake-base"
    audit = [a["action"] for a in gateway.store.audit_log()]
    assert "model.promote" in audit and "model.rollback" in audit


def test_canary_share_routes_that_share_of_conversations_and_sticks(tmp_path: Path) -> None:
    gateway = make_gateway(tmp_path, GatewayLimits(requests_per_minute=1000, burst=1000))
    engineer = gateway.headers("engineer")
    gateway.client.post("/admin/models/promote", json={"name": "fake-adapter", "alias": "canary"}, headers=engineer)
    assert gateway.client.put("/admin/models/canary", json={"percent": 30}, headers=engineer).status_code == 200
    conversations = [f"conv-{i}" for i in range(40)]
    answers = {c: _answer(gateway, c) for c in conversations}
    expected = {c for c in conversations if canary_bucket(c) < 30}
    assert {c for c, a in answers.items() if a == "answer from fake-adapter"} == expected
    assert 0 < len(expected) < len(conversations)
    assert all(_answer(gateway, c) == answers[c] for c in conversations[:5])  # a conversation never flips
    explicit = gateway.chat("customer", Q, model="helpline-support-canary").json()
    assert explicit["choices"][0]["message"]["content"] == "answer from fake-adapter"
    assert gateway.client.put("/admin/models/canary", json={"percent": 101}, headers=engineer).status_code == 400


def test_a_share_stored_by_another_process_is_followed_without_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`helpline improve` (or another replica) sets the share in the store, not in this gateway's memory."""
    monkeypatch.setattr(routing, "SHARE_REFRESH_S", 0.0)
    gateway = make_gateway(tmp_path, GatewayLimits(requests_per_minute=1000, burst=1000))
    gateway.client.post(
        "/admin/models/promote", json={"name": "fake-adapter", "alias": "canary"}, headers=gateway.headers("engineer")
    )
    assert _answer(gateway, "conv-a") == "answer from fake-base"
    gateway.store.set_setting("canary_share", "100")  # as a separate process writes it
    assert _answer(gateway, "conv-b") == "answer from fake-adapter"
    gateway.store.set_setting("canary_share", "0")
    assert _answer(gateway, "conv-c") == "answer from fake-base"


def test_export_gives_training_chats_with_personal_data_redacted(gateway: Gateway) -> None:
    good = gateway.chat("customer", "I am jane@example.com, how do I return an item?").json()
    bad = gateway.chat("customer", Q).json()
    customer = gateway.headers("customer")
    gateway.client.post("/v1/feedback", json={"response_id": good["id"], "rating": "up"}, headers=customer)
    gateway.client.post(
        "/v1/feedback",
        json={"response_id": bad["id"], "rating": "down", "correction": "Open Orders and choose Return."},
        headers=gateway.headers("staff"),
    )
    resp = gateway.client.get("/admin/conversations/export", headers=gateway.headers("engineer"))
    rows = [json.loads(line) for line in resp.text.splitlines()]
    assert len(rows) == 2
    assert rows[0]["messages"][0] == {"role": "user", "content": "I am {{Email}}, how do I return an item?"}
    assert rows[0]["messages"][-1]["role"] == "assistant"
    assert rows[1]["messages"][-1]["content"] == "Open Orders and choose Return."


def test_conversation_log_records_model_passages_and_latency(gateway: Gateway) -> None:
    answer = gateway.chat("customer", Q).json()
    turn = gateway.store.turn(answer["id"])
    assert turn["served_model"] == "fake-base" and turn["passages"][0]["doc_id"] == "returns"
    assert turn["passages"][0]["text"] and turn["latency_ms"] > 0 and turn["answer"] == "answer from fake-base"


def test_promotion_without_a_passing_gate_is_refused_unless_an_admin_forces_it(gateway: Gateway) -> None:
    engineer, admin = gateway.headers("engineer"), gateway.headers("admin")
    resp = gateway.client.post("/admin/models/promote", json={"name": "ungated-adapter"}, headers=engineer)
    assert resp.status_code == 409
    assert "no gate report" in resp.json()["error"]["message"]
    assert _answer(gateway) == "answer from fake-base"  # nothing switched
    forced = {"name": "ungated-adapter", "force": True}
    assert gateway.client.post("/admin/models/promote", json=forced, headers=engineer).status_code == 403
    assert gateway.client.post("/admin/models/promote", json=forced, headers=admin).status_code == 200
    assert _answer(gateway) == "answer from ungated-adapter"
    assert "model.promote.forced" in [a["action"] for a in gateway.store.audit_log()]


def test_a_second_rollback_does_not_bring_back_the_model_just_rolled_back(gateway: Gateway) -> None:
    engineer = gateway.headers("engineer")
    gateway.client.post("/admin/models/promote", json={"name": "fake-adapter"}, headers=engineer)
    assert gateway.client.post("/admin/models/rollback", json={}, headers=engineer).status_code == 200
    again = gateway.client.post("/admin/models/rollback", json={}, headers=engineer)
    assert again.status_code == 404
    assert "no earlier model" in again.json()["error"]["message"]
    assert _answer(gateway) == "answer from fake-base"


def test_rolling_back_past_the_last_promotion_needs_a_passing_gate(gateway: Gateway) -> None:
    engineer, admin = gateway.headers("engineer"), gateway.headers("admin")
    gateway.client.post("/admin/models/promote", json={"name": "fake-adapter"}, headers=engineer)
    forced = {"name": "ungated-adapter", "force": True}
    assert gateway.client.post("/admin/models/promote", json=forced, headers=admin).status_code == 200
    # Undoing the latest promotion restores what served just before it.
    assert gateway.client.post("/admin/models/rollback", json={}, headers=engineer).status_code == 200
    assert _answer(gateway) == "answer from fake-adapter"
    # One step further goes back to fake-base, which never passed a gate: the promotion rule applies.
    refused = gateway.client.post("/admin/models/rollback", json={}, headers=engineer)
    assert refused.status_code == 409
    assert "no gate report" in refused.json()["error"]["message"]
    assert _answer(gateway) == "answer from fake-adapter"
