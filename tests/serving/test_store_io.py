"""The gateway's SQLite log: writes leave the event loop free, a busy database gives up in bounded time,
the routes' queries have indexes, and reviews read one turn, not the whole log."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpline.serving.gateway.auth import Principal
from helpline.serving.gateway.protocol import ChatCompletionRequest
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import Gateway

RETURN_Q = "How do I return an item?"


def _hold_write_lock(path: Path) -> sqlite3.Connection:
    """Another writer holding the database (a long export, a backup): writers wait for it."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("BEGIN IMMEDIATE")
    return db


def _service(gateway: Gateway) -> tuple[Any, Principal, ChatCompletionRequest]:
    service = gateway.client.app.state.chat_service
    principal = Principal(gateway.store.lookup(gateway.keys["customer"]))  # type: ignore[arg-type]
    return service, principal, ChatCompletionRequest(messages=[{"role": "user", "content": RETURN_Q}])


def test_a_log_write_waiting_for_the_database_does_not_stall_the_event_loop(gateway: Gateway) -> None:
    service, principal, body = _service(gateway)
    holder = _hold_write_lock(gateway.store.path)
    threading.Timer(1.0, holder.commit).start()

    async def longest_stall() -> float:
        done, gaps = False, [0.0]

        async def tick() -> None:
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0.01)
                now = time.perf_counter()
                gaps.append(now - last)
                last = now

        ticker = asyncio.create_task(tick())
        await service.complete(body, principal)
        done = True
        await ticker
        return max(gaps)

    assert asyncio.run(longest_stall()) < 0.5  # other streams kept flowing while the write waited ~1 s
    assert gateway.store.turns(limit=1)[0]["status"] == "ok"  # and the write landed once the lock was free
    holder.close()


def test_a_log_write_that_gives_up_still_answers_and_frees_the_slot(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    service, principal, body = _service(gateway)
    service.store = GatewayStore(gateway.store.path, busy_timeout_s=0.2)
    holder = _hold_write_lock(gateway.store.path)
    try:
        start = time.perf_counter()
        with caplog.at_level(logging.ERROR, logger="helpline.gateway"):
            answer = asyncio.run(service.complete(body, principal))
        assert time.perf_counter() - start < 5
    finally:
        holder.rollback()
        holder.close()
    assert answer.choices[0].message.content == "answer from fake-base"
    assert service.gate.active == 0
    assert any(answer.id in r.getMessage() for r in caplog.records)  # the lost log row is reported


def test_an_existing_database_gains_indexes_for_the_queries_the_routes_run(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    GatewayStore(path)
    with sqlite3.connect(path) as db:  # as a database from before the indexes (and so from before Alembic)
        for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall():
            db.execute(f"DROP INDEX {name}")
        db.execute("DROP TABLE alembic_version")
    GatewayStore(path)
    with sqlite3.connect(path) as db:

        def plan(sql: str) -> str:
            return " ".join(str(row[-1]) for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))

        assert "INDEX" in plan("SELECT * FROM conversations WHERE conversation_id = 'c' AND key_id = 1")
        assert "INDEX" in plan("SELECT * FROM conversations ORDER BY at DESC LIMIT 10")
        assert "INDEX" in plan("SELECT MAX(id) FROM feedback WHERE response_id = 'r'")


class CountingStore(GatewayStore):
    """Records how many turns each read of the log asked for."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.asked: list[int] = []

    def turns(self, *, limit: int = 1000, **kwargs: Any) -> list[dict[str, Any]]:
        self.asked.append(limit)
        return super().turns(limit=limit, **kwargs)


def test_saving_a_review_and_exporting_read_no_more_than_a_page_of_the_log(gateway: Gateway) -> None:
    answer = gateway.chat("customer", RETURN_Q).json()
    counting = CountingStore(gateway.store.path)
    gateway.client.app.state.store = counting
    staff = gateway.headers("staff")
    resp = gateway.client.post(f"/console/review/{answer['id']}", json={"answer": "Open Orders."}, headers=staff)
    assert resp.status_code == 200
    assert gateway.client.get("/admin/conversations/export", headers=gateway.headers("engineer")).status_code == 200
    assert gateway.client.get("/console/review", headers=staff).status_code == 200
    assert max(counting.asked, default=0) <= 2000
