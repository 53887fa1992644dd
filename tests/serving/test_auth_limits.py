"""Keys, roles and limits: every route checks the caller; overload answers 429/503 with Retry-After."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.serving.gateway.config import GatewayLimits
from helpline.testing.serving import Gateway, make_gateway

Q = "How do I return an item?"


def test_no_key_or_wrong_key_is_401_in_openai_shape(gateway: Gateway) -> None:
    body = {"messages": [{"role": "user", "content": Q}]}
    for headers in ({}, {"Authorization": "Bearer hl-not-a-key"}):
        resp = gateway.client.post("/v1/chat/completions", json=body, headers=headers)
        assert resp.status_code == 401
        assert resp.json()["error"]["type"] == "authentication_error"
    assert gateway.client.get("/v1/models").status_code == 401
    assert gateway.client.get("/health").status_code == 200  # liveness needs no key


def test_keys_are_stored_hashed(gateway: Gateway) -> None:
    raw = gateway.store.path.read_bytes()
    assert all(key.encode() not in raw for key in gateway.keys.values())


def test_a_database_from_before_the_withdrawn_column_gains_it_and_keeps_its_rows(tmp_path: Path) -> None:
    import sqlite3

    from helpline.serving.gateway.store import GatewayStore

    path = tmp_path / "gateway.sqlite"
    with sqlite3.connect(path) as db:  # the conversations table as the first release created it
        db.execute(
            "CREATE TABLE conversations (response_id TEXT PRIMARY KEY, conversation_id TEXT NOT NULL, at REAL NOT NULL,"
            " key_id INTEGER, role TEXT NOT NULL, model TEXT NOT NULL, served_model TEXT NOT NULL, adapter TEXT,"
            " messages TEXT NOT NULL, passages TEXT NOT NULL, answer TEXT NOT NULL, abstained INTEGER NOT NULL,"
            " latency_ms REAL NOT NULL, status TEXT NOT NULL DEFAULT 'ok')"
        )
        db.execute(
            "INSERT INTO conversations VALUES ('r1', 'c1', 1.0, NULL, 'customer', 'helpline-support', 'base', NULL,"
            " '[]', '[]', 'old answer', 0, 12.0, 'ok')"
        )
    store = GatewayStore(path)
    old = store.turn("r1")
    assert old["answer"] == "old answer" and old["withdrawn"] is None and old["verification"] is None
    store.record_turn(
        response_id="r2", conversation_id="c2", at=2.0, key_id=None, role="customer", model="helpline-support",
        served_model="base", adapter=None, messages=[], passages=[], answer="handoff", abstained=1, latency_ms=5.0,
        status="ok", withdrawn="draft", verification={"grounded": False, "score": 0.2, "reason": "r"},
    )  # fmt: skip
    assert GatewayStore(path).turn("r2")["verification"]["score"] == 0.2  # reopening changes nothing
    assert [t["response_id"] for t in store.turns()] == ["r2", "r1"]


def test_revoked_key_stops_working(gateway: Gateway) -> None:
    key_id = next(k.id for k in gateway.store.list_keys() if k.role == "customer")
    gateway.store.revoke_key(key_id, actor="test")
    assert gateway.chat("customer", Q).status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "minimum", "body"),
    [
        ("get", "/admin/kb/documents", "staff", None),
        ("get", "/admin/conversations", "staff", None),
        ("get", "/admin/models", "engineer", None),
        ("put", "/admin/models/canary", "engineer", {"percent": 10}),
        ("get", "/metrics", "engineer", None),
        ("get", "/admin/conversations/export", "engineer", None),
        ("get", "/admin/keys", "admin", None),
        ("get", "/admin/audit", "admin", None),
    ],
)
def test_each_role_reaches_only_its_routes(
    gateway: Gateway, method: str, path: str, minimum: str, body: dict | None
) -> None:
    roles = ["customer", "staff", "engineer", "admin"]
    for role in roles:
        kwargs = {"json": body} if body is not None else {}
        resp = getattr(gateway.client, method)(path, headers=gateway.headers(role), **kwargs)
        allowed = roles.index(role) >= roles.index(minimum)
        assert resp.status_code == (200 if allowed else 403), (role, path, resp.text)


def test_customer_cannot_pick_a_raw_model(gateway: Gateway) -> None:
    resp = gateway.chat("customer", Q, model="fake-adapter")
    assert resp.status_code == 400
    assert gateway.chat("engineer", Q, model="fake-adapter").json()["choices"][0]["message"]["content"] == (
        "answer from fake-adapter"
    )


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"messages": []}, 400),
        ({"messages": [{"role": "user"}]}, 400),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400),
        ({"messages": [{"role": "assistant", "content": "hi"}]}, 400),
        ({"messages": [{"role": "user", "content": Q}], "max_tokens": 100000}, 400),
        ({"messages": [{"role": "user", "content": Q}], "max_tokens": 0}, 400),
        ({"messages": [{"role": "user", "content": "x" * 9000}]}, 400),
        ({"messages": [{"role": "user", "content": Q}] * 65}, 400),
        ({"messages": [{"role": "user", "content": Q}], "temperature": 9}, 400),
    ],
)
def test_malformed_and_oversize_requests_are_refused(gateway: Gateway, body: dict, status: int) -> None:
    resp = gateway.client.post("/v1/chat/completions", json=body, headers=gateway.headers("customer"))
    assert resp.status_code == status, resp.text
    assert resp.json()["error"]["message"]


def test_invalid_json_is_400(gateway: Gateway) -> None:
    resp = gateway.client.post(
        "/v1/chat/completions",
        content=b"{not json",
        headers={**gateway.headers("customer"), "content-type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"


def test_body_over_the_limit_is_413(gateway: Gateway) -> None:
    resp = gateway.client.post(
        "/v1/chat/completions",
        content=b"x" * (300 * 1024),
        headers={**gateway.headers("customer"), "content-type": "application/json"},
    )
    assert resp.status_code == 413


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, GatewayLimits(requests_per_minute=2, burst=2))
    codes = [gw.chat("customer", Q).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    limited = gw.chat("customer", Q)
    assert int(limited.headers["Retry-After"]) >= 1
    assert limited.json()["error"]["type"] == "rate_limit_error"
    assert gw.chat("staff", Q).status_code == 200  # the limit is per key


def test_concurrency_cap_answers_503_with_retry_after(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path, GatewayLimits(max_concurrency=1))
    gate = gw.client.app.state.chat_service.gate
    gate.acquire()  # one request is generating
    resp = gw.chat("customer", Q)
    assert resp.status_code == 503 and resp.headers["Retry-After"] == "2"
    gate.release()
    assert gw.chat("customer", Q).status_code == 200
    assert gate.active == 0  # finished requests give their slot back
