"""The gateway database's share of a chat (`helpline bench scale`, ``database``): the store calls one chat turn makes
(the key check, the conversation's earlier answers, the turn's log row) and an audit entry (a refused or failed
request's), each timed on its own, median over ``turns`` turns. SQLite in a scratch folder, and PostgreSQL when the
bench is given a scratch database (``--database-url``: the bench writes keys and turns into it).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from helpline.serving.gateway.store import GatewayStore

_CALLS = ("lookup", "answers_in", "record_turn", "audit")


def store_overhead(store: GatewayStore, *, turns: int = 2000) -> dict[str, Any]:
    """Median microseconds per call, and per chat turn (``turn``: lookup + answers_in + record_turn)."""
    key, record = store.create_key("customer", name="bench-database", actor="bench")
    seconds: dict[str, list[float]] = {name: [] for name in (*_CALLS, "turn")}
    for i in range(turns):
        conversation = f"bench-{i % 50}"
        started = time.perf_counter()
        store.lookup(key)
        looked_up = time.perf_counter()
        store.answers_in(conversation, key_id=record.id)
        read = time.perf_counter()
        store.record_turn(
            response_id=f"bench-{time.time_ns()}-{i}", conversation_id=conversation, at=time.time(),
            key_id=record.id, role="customer", model="helpline-support", served_model="base", adapter=None,
            messages=[{"role": "user", "content": "How do I return an item?"}],
            passages=[{"doc_id": "returns", "text": "Return any item within 30 days."}], answer="Within 30 days.",
            abstained=0, latency_ms=12.0, status="ok", origins=["client"],
        )  # fmt: skip
        logged = time.perf_counter()
        store.audit(f"customer:{record.id}:", "bench.failed", "POST /v1/chat/completions", {"status": 429})
        audited = time.perf_counter()
        for name, spent in zip(_CALLS, (looked_up - started, read - looked_up, logged - read, audited - logged)):
            seconds[name].append(spent)
        seconds["turn"].append(logged - started)
    return {f"{name}_us": round(statistics.median(v) * 1e6) for name, v in seconds.items()} | {"turns": turns}


def database_overhead(folder: Path, *, url: str | None, turns: int) -> dict[str, Any]:
    """``store_overhead`` on a new SQLite file in ``folder``, and on the PostgreSQL database ``url`` when given."""
    out = {"sqlite": store_overhead(GatewayStore(folder / "overhead.sqlite"), turns=turns)}
    if url is not None:
        out["postgresql"] = store_overhead(GatewayStore(folder / "unused.sqlite", url=url), turns=turns)
    return out
