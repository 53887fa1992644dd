"""Gateway replicas over one PostgreSQL database (``database_url``): a throwaway server from Debian's `postgresql`
(helpline/testing/postgres.py), skipped where it is not installed. Two gateway apps built over fakes, each with its
own store (its own connections), as two replicas on two hosts: a conversation started on A continues on B, a key
made through A works on B, feedback given through B is in A's review queue. And the schema on PostgreSQL: what the
migrations build is what the store queries, and replicas opening one fresh database at once all come up."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from helpline.serving.gateway.store import GatewayStore
from helpline.serving.gateway.store_schema import metadata
from helpline.testing.postgres import PostgresServer, open_at_once
from helpline.testing.serving import Gateway, make_gateway, make_replica

pytestmark = pytest.mark.integration
RETURN_Q = "How do I return an item?"


@pytest.fixture
def replicas(postgres: PostgresServer, tmp_path: Path) -> tuple[Gateway, Gateway]:
    url = postgres.new_database()
    a = make_gateway(tmp_path, store=GatewayStore(tmp_path / "unused.sqlite", url=url))
    b = make_replica(a, store=GatewayStore(tmp_path / "unused.sqlite", url=url))
    assert a.store is not b.store and a.store.engine is not b.store.engine
    return a, b


def test_a_conversation_started_on_one_replica_continues_on_the_other(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    first = a.chat("customer", RETURN_Q).json()
    answer = first["choices"][0]["message"]["content"]
    history = [{"role": "user", "content": RETURN_Q}, {"role": "assistant", "content": answer},
               {"role": "user", "content": "And how long does the refund take?"}]  # fmt: skip
    body = {"model": "helpline-support", "messages": history, "conversation_id": first["conversation_id"]}
    second = b.client.post("/v1/chat/completions", json=body, headers=b.headers("customer")).json()

    assert second["conversation_id"] == first["conversation_id"]
    turn = a.store.turn(second["id"])
    assert turn["origins"] == ["client", "gateway", "client"]  # B knew A's answer for the gateway's own
    assert [t["response_id"] for t in a.store.turns()] == [second["id"], first["id"]]


def test_a_key_made_through_one_replica_works_on_the_other_until_revoked_there(
    replicas: tuple[Gateway, Gateway],
) -> None:
    a, b = replicas
    made = a.client.post("/admin/keys", json={"role": "customer", "name": "bob"}, headers=a.headers("admin")).json()
    bob = {"Authorization": f"Bearer {made['key']}"}
    chat = {"model": "helpline-support", "messages": [{"role": "user", "content": RETURN_Q}]}
    assert b.client.post("/v1/chat/completions", json=chat, headers=bob).status_code == 200
    assert b.client.delete(f"/admin/keys/{made['id']}", headers=b.headers("admin")).status_code == 200
    assert a.client.post("/v1/chat/completions", json=chat, headers=bob).status_code == 401


def test_feedback_given_through_one_replica_is_in_the_others_review_queue(replicas: tuple[Gateway, Gateway]) -> None:
    a, b = replicas
    answer = a.chat("customer", RETURN_Q).json()
    rated = b.client.post("/v1/feedback", json={"response_id": answer["id"], "rating": "down", "comment": "vague"},
                          headers=b.headers("customer"))  # fmt: skip
    assert rated.status_code == 200
    queue = a.client.get("/console/review", headers=a.headers("staff")).json()["items"]
    assert [(i["response_id"], i["rating"], i["comment"]) for i in queue] == [(answer["id"], "down", "vague")]


def test_the_migrations_build_exactly_the_tables_the_store_queries_on_postgresql(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = GatewayStore(tmp_path / "unused.sqlite", url=postgres.new_database())
    with store.engine.connect() as db:
        assert compare_metadata(MigrationContext.configure(db), metadata) == []


def test_replicas_opening_one_fresh_postgresql_database_at_once_all_migrate_it_and_write(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    url = postgres.new_database()
    assert open_at_once(tmp_path / "unused.sqlite", url, 4) == [(0, "")] * 4
    names = [k.name for k in GatewayStore(tmp_path / "unused.sqlite", url=url).list_keys()]
    assert sorted(names) == [f"replica-{n}" for n in range(4)]


def test_a_replica_carries_on_without_a_failed_request_after_postgresql_restarts(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = GatewayStore(tmp_path / "unused.sqlite", url=postgres.new_database())
    key, _ = store.create_key("customer")
    assert store.lookup(key) is not None  # a pooled connection now open
    postgres.restart()
    assert store.lookup(key) is not None  # the stale connection is replaced as it leaves the pool
    store.audit("customer:1:", "after.restart")
    assert store.audit_log(1)[0]["action"] == "after.restart"
