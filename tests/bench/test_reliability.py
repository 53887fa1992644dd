"""The pure parts of `helpline bench reliability`: what counts as shed or failed, memory growth, the
acknowledged-writes check, reading streams, and the processes the harness finds. No live stack here."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from helpline.bench.reliability import ReliabilityOptions, run_reliability
from helpline.bench.reliability.harness import (
    LiveOptions,
    alive,
    hang_detection_available,
    helpline_env,
    process_tree,
    rss_mb,
)
from helpline.bench.reliability.kb_sync import ledger_rows
from helpline.bench.reliability.load import rss_growth
from helpline.bench.reliability.storage import integrity, missing_writes, stored_writes
from helpline.evaluation.load import Sample, closed_loop, overload_summary, stream_chat
from helpline.platform.errors import ConfigError
from helpline.retrieval.ingest.records import RecordManager
from helpline.serving.gateway.store import GatewayStore

# what overload did --------------------------------------------------------------------------------


def test_overload_summary_counts_shed_requests_apart_from_failures() -> None:
    samples = [
        Sample(ok=True, ttft=1.0, e2e=2.0, tokens=5, done=True),
        Sample(ok=True, ttft=3.0, e2e=4.0, tokens=5, done=True),
        Sample(ok=False, status=503, retry_after="2"),
        Sample(ok=False, status=429, retry_after="1"),
        Sample(ok=False, status=503),  # shed, but the client is not told when to come back
        Sample(ok=False, status=500, error="internal error"),
        Sample(ok=False, status=0, error="ConnectError"),
        Sample(ok=False, status=200, done=True, error_event=True, error="engine failed"),
        Sample(ok=False, status=200, error="no [DONE]"),
        Sample(ok=False, status=400, error="bad request"),
    ]
    s = overload_summary(samples, wall=5.0)
    assert s["requests"] == 10 and s["served"] == 2
    assert (s["shed_503"], s["shed_429"], s["shed_without_retry_after"]) == (2, 1, 1)
    assert s["shed_share"] == 0.3
    assert s["other_5xx"] == 1 and s["other_5xx_share"] == 0.1  # a 503 is shed, a 500 is not
    assert s["no_response"] == 1 and s["other_4xx"] == 1
    assert s["stream_error_events"] == 1 and s["streams_without_done"] == 1
    assert s["e2e_p50_s"] in (2.0, 4.0) and s["e2e_p95_s"] == 4.0  # latency of the served requests only
    assert "internal error" in s["errors"] and not any("503" in e for e in s["errors"])


def test_overload_summary_of_nothing_has_zero_shares() -> None:
    s = overload_summary([], wall=0.0)
    assert s["requests"] == 0 and s["shed_share"] == 0.0 and s["requests_per_s"] == 0.0


def test_rss_growth_within_and_past_the_limit() -> None:
    out = rss_growth(
        {"gateway_mb": 1000.0, "engine_mb": 2000.0}, {"gateway_mb": 1099.0, "engine_mb": 2300.0}, limit=0.1
    )
    assert out["gateway_mb"] == {"before": 1000.0, "after": 1099.0, "growth": 0.099, "ok": True}
    assert out["engine_mb"]["ok"] is False and out["engine_mb"]["growth"] == 0.15


def test_rss_growth_of_a_process_not_measured_before_fails() -> None:
    assert rss_growth({"engine_mb": 0.0}, {"engine_mb": 500.0}, limit=0.1)["engine_mb"]["ok"] is False


# acknowledged writes --------------------------------------------------------------------------------


def test_missing_writes_names_each_acknowledged_write_not_stored() -> None:
    missing = missing_writes(
        {"r1", "r2", "r3"}, {("r1", "a"), ("r2", "b")}, turns={"r1", "r3", "r9"}, feedback={("r1", "a"), ("r2", "x")}
    )
    assert missing == {"turns": ["r2"], "feedback": [("r2", "b")]}
    assert missing_writes({"r1"}, set(), {"r1", "r2"}, set()) == {"turns": [], "feedback": []}


def _turn(store: GatewayStore, rid: str) -> None:
    store.record_turn(
        response_id=rid, conversation_id="c", at=1.0, key_id=None, role="customer", model="helpline-support",
        served_model="base", adapter=None, messages=[], passages=[], answer="a", abstained=0, latency_ms=1.0,
    )  # fmt: skip


def test_stored_writes_reads_turns_and_feedback_of_a_gateway_database(tmp_path: Path) -> None:
    db = tmp_path / "gateway.sqlite"
    store = GatewayStore(db)
    _turn(store, "r1")
    _turn(store, "r2")
    store.add_feedback("r1", rating="up", comment="bench-0-0", key_id=None)
    turns, feedback = stored_writes(db)
    assert turns == {"r1", "r2"} and feedback == {("r1", "bench-0-0")}
    assert missing_writes({"r1", "r3"}, {("r1", "bench-0-0")}, turns, feedback)["turns"] == ["r3"]
    assert integrity(db) == "ok"


def testledger_rows_counts_done_and_pending_documents(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite"
    assert ledger_rows(path) == (0, 0)  # no ledger yet: nothing done, and no file is created
    assert not path.exists()
    ledger = RecordManager(path)
    meta = {"title": "t", "source": "s", "access": "public", "origin": ""}
    for doc in ("a", "b", "c"):
        ledger.begin(doc, doc_hash="h", previous_hash=None, chunk_ids=[f"{doc}#0"], meta=meta)
    ledger.commit("a", ["a#0"], change="added")
    assert ledger_rows(path) == (1, 2)


# reading a stream -----------------------------------------------------------------------------------


def _events(*events: str) -> bytes:
    return "".join(f"data: {e}\n\n" for e in events).encode()


CHUNK = '{"id": "chatcmpl-1", "choices": [{"index": 0, "delta": {"content": "Hello"}, "finish_reason": null}]}'
ERROR = '{"error": {"message": "the assistant is unavailable", "code": 503}}'


@pytest.mark.parametrize(
    ("status", "headers", "body", "expected"),
    [
        (200, {}, _events(CHUNK, "[DONE]"), {"ok": True, "done": True, "error_event": False, "tokens": 1}),
        (200, {}, _events(CHUNK, ERROR, "[DONE]"), {"ok": False, "done": True, "error_event": True}),
        (200, {}, _events(CHUNK), {"ok": False, "done": False, "error": "no [DONE]"}),
        (503, {"retry-after": "2"}, b'{"error": {}}', {"ok": False, "status": 503, "retry_after": "2"}),
        (429, {}, b"{}", {"ok": False, "status": 429, "retry_after": None}),
    ],
)
def test_stream_chat_reads_status_retry_after_error_events_and_done(
    status: int, headers: dict, body: bytes, expected: dict
) -> None:
    opened: list[bool] = []

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers, content=body)

    async def go() -> Sample:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await stream_chat(client, "http://gw/v1/chat/completions", "k", {"model": "m"},
                                     on_open=lambda: opened.append(True))  # fmt: skip

    sample = asyncio.run(go())
    assert {k: getattr(sample, k) for k in expected} == expected
    assert opened == [True]
    if status == 200:
        assert sample.response_id == "chatcmpl-1"


def test_stream_chat_keeps_the_status_of_a_stream_whose_connection_dropped() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadError("peer closed connection")

    async def go() -> Sample:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await stream_chat(client, "http://gw/v1/chat/completions", "k", {"model": "m"})

    sample = asyncio.run(go())
    assert sample.status == 0 and not sample.ok and "ReadError" in sample.error


def test_closed_loop_runs_every_client_until_the_time_is_up() -> None:
    sent: list[int] = []

    async def send() -> Sample:
        sent.append(1)
        await asyncio.sleep(0.01)
        return Sample(ok=False, status=503, retry_after="1") if len(sent) % 2 else Sample(ok=True, done=True)

    samples = asyncio.run(closed_loop(send, workers=3, seconds=0.1, pause_after_shed_s=0.0))
    assert len(samples) == len(sent) >= 3
    assert {s.status for s in samples} == {200, 503}


# the harness ---------------------------------------------------------------------------------------


def test_live_options_pass_the_cap_and_lift_the_key_rate_limit() -> None:
    env = LiveOptions(concurrency_cap=3, max_tokens=20, extra_env={"HELPLINE_GATEWAY__LIMITS__BURST": "7"}).env()
    assert env["HELPLINE_GATEWAY__LIMITS__MAX_CONCURRENCY"] == "3"
    assert env["HELPLINE_GENERATION__MAX_NEW_TOKENS"] == "20"
    assert env["HELPLINE_GATEWAY__LIMITS__BURST"] == "7"  # extra_env wins
    assert ("HELPLINE_VLLM__HANG_TIMEOUT_S" in env) == hang_detection_available()


def test_helpline_env_drops_this_process_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HELPLINE_CHAT_MODEL", "something-else")
    env = helpline_env(Path("/ws/.helpline"), {"HELPLINE_GATEWAY__PORT": "9"})
    assert "HELPLINE_CHAT_MODEL" not in env
    assert env["HELPLINE_WORKSPACE"] == "/ws/.helpline" and env["HELPLINE_GATEWAY__PORT"] == "9"


def test_process_tree_finds_a_child_and_its_memory() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert child.pid in process_tree(os.getpid())
        assert rss_mb([child.pid]) > 0
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid) and child.pid not in process_tree(os.getpid())
    assert rss_mb([child.pid]) == 0


def test_unknown_section_is_refused_before_anything_starts() -> None:
    with pytest.raises(ConfigError, match="unknown section or fault: chaos"):
        run_reliability(ReliabilityOptions(sections=("load", "chaos")))
