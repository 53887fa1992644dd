"""`helpline bench scale`'s database figure: the store calls of a chat turn timed one by one, on SQLite (and on
PostgreSQL when given a scratch database, which the PostgreSQL integration tests cover)."""

from __future__ import annotations

from pathlib import Path

from helpline.bench.database import database_overhead
from helpline.serving.gateway.store import GatewayStore


def test_the_database_figure_times_each_call_of_a_chat_turn_and_writes_the_turns(tmp_path: Path) -> None:
    figures = database_overhead(tmp_path, url=None, turns=5)
    sqlite = figures["sqlite"]
    assert set(sqlite) == {"lookup_us", "answers_in_us", "record_turn_us", "audit_us", "turn_us", "turns"}
    assert all(v > 0 for v in sqlite.values()) and "postgresql" not in figures
    assert sqlite["turn_us"] >= sqlite["record_turn_us"]
    assert len(GatewayStore(tmp_path / "overhead.sqlite").turns()) == 5
