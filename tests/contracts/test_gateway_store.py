"""The gateway store contract (helpline/serving/gateway/store.py): what the routes, the CLI, the review queue, the
improvement loop, erasure and retention rely on from the gateway's database, whichever database it is.

Runs against SQLite in a temporary folder (default tier) and against PostgreSQL (integration: a throwaway server
from Debian's `postgresql`, one empty database per test; skipped where it is not installed).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from helpline.platform.errors import NotFoundError
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.postgres import PostgresServer


def record(store: GatewayStore, rid: str, *, at: float, conversation: str = "c1", key_id: int | None = 1,
           answer: str = "Within 30 days.", abstained: bool = False, **extra: Any) -> None:  # fmt: skip
    """A turn as the gateway logs it."""
    store.record_turn(
        response_id=rid, conversation_id=conversation, at=at, key_id=key_id, role="customer",
        model="helpline-support", served_model="base", adapter=None,
        messages=[{"role": "user", "content": f"question {rid}"}],
        passages=[{"doc_id": "returns", "text": "Return any item within 30 days."}, {"doc_id": "fees", "text": "x"}],
        answer=answer, abstained=abstained, latency_ms=12.5, status="ok", **extra,
    )  # fmt: skip


class GatewayStoreContract:
    """What the gateway relies on from its database; subclass and override the ``store`` fixture."""

    @pytest.fixture
    def store(self) -> GatewayStore:
        raise NotImplementedError("override the `store` fixture")

    # keys and audit --------------------------------------------------------------------------

    def test_a_created_key_is_found_by_lookup_until_it_is_revoked(self, store: GatewayStore) -> None:
        key, created = store.create_key("staff", name="alice", actor="test")
        found = store.lookup(key)
        assert found == created and found.role == "staff" and found.name == "alice" and found.revoked_at is None
        assert store.lookup(key + "x") is None
        store.revoke_key(created.id, actor="test")
        assert store.lookup(key) is None
        assert store.list_keys()[0].revoked_at is not None
        with pytest.raises(NotFoundError):
            store.revoke_key(created.id, actor="test")

    def test_keys_are_numbered_in_order_and_found_by_id_prefix_or_the_key_itself(self, store: GatewayStore) -> None:
        made = [store.create_key("customer", name=f"k{i}")[0] for i in range(3)]
        ids = [k.id for k in store.list_keys()]
        assert ids == sorted(ids) and len(set(ids)) == 3
        second = store.lookup(made[1])
        assert second is not None
        assert store.find_key(str(second.id)) == store.find_key(made[1]) == store.find_key(second.prefix) == second
        with pytest.raises(NotFoundError, match="no key matches"):
            store.find_key("hl-nothing")

    def test_the_audit_log_reads_newest_first_with_its_detail(self, store: GatewayStore) -> None:
        _, key = store.create_key("admin", name="root", actor="cli")
        store.audit("admin:1:", "alias.set", "production", {"model": "m", "nested": [1, 2]})
        log = store.audit_log(limit=2)
        assert [e["action"] for e in log] == ["alias.set", "key.create"]
        assert log[0]["detail"] == {"model": "m", "nested": [1, 2]} and log[0]["actor"] == "admin:1:"
        assert log[1]["target"] == f"key:{key.id}" and log[1]["detail"] == {"role": "admin", "name": "root"}

    # settings and connectors -----------------------------------------------------------------

    def test_a_setting_saved_again_keeps_the_last_value(self, store: GatewayStore) -> None:
        assert store.get_setting("canary_share") is None and store.get_setting("canary_share", "0") == "0"
        store.set_setting("canary_share", "0.1")
        store.set_setting("canary_share", "0.25")
        assert store.get_setting("canary_share") == "0.25"

    def test_a_connector_saved_again_changes_its_source_and_keeps_its_last_run(self, store: GatewayStore) -> None:
        store.save_connector("help", source="a.zip", every_s=60, actor="cli")
        store.connector_ran("help", status="ok", summary={"added": 2})
        added = store.connectors()[0]["added_at"]
        store.save_connector("help", source="b.zip", every_s=120, actor="admin:1:")
        [saved] = store.connectors()
        assert (saved["source"], saved["every_s"], saved["actor"]) == ("b.zip", 120.0, "admin:1:")
        assert saved["added_at"] == added and saved["last_status"] == "ok" and saved["last_summary"] == {"added": 2}
        assert store.remove_connector("help") is True and store.remove_connector("help") is False
        assert store.connectors() == []

    # conversations and feedback --------------------------------------------------------------

    def test_a_turn_reads_back_with_its_messages_passages_flags_and_latest_feedback(self, store: GatewayStore) -> None:
        record(store, "r1", at=10.0, abstained=True, verification={"grounded": False, "score": 0.2},
               origins=["client"], internal=True, withdrawn="draft")  # fmt: skip
        turn = store.turn("r1")
        assert turn["messages"] == [{"role": "user", "content": "question r1"}] and len(turn["passages"]) == 2
        assert turn["abstained"] is True and turn["internal"] == 1 and turn["withdrawn"] == "draft"
        assert turn["verification"] == {"grounded": False, "score": 0.2} and turn["origins"] == ["client"]
        assert turn["rating"] is None and turn["latency_ms"] == 12.5 and turn["at"] == 10.0
        store.add_feedback("r1", rating="down", comment="wrong", key_id=1)
        store.add_feedback("r1", rating="up", key_id=1)
        assert (store.turn("r1")["rating"], store.turn("r1")["comment"]) == ("up", "")
        with pytest.raises(NotFoundError):
            store.turn("nope")
        with pytest.raises(NotFoundError):
            store.add_feedback("nope", rating="up", key_id=1)

    def test_answers_in_tells_one_keys_answers_from_anothers_and_from_keyless_ones(self, store: GatewayStore) -> None:
        record(store, "r1", at=1.0, key_id=1, answer=" Within 30 days. ")
        record(store, "r2", at=2.0, key_id=2, answer="Other key.")
        record(store, "r3", at=3.0, key_id=None, answer="No key.")
        assert store.answers_in("c1", key_id=1) == {"Within 30 days."}
        assert store.answers_in("c1", key_id=None) == {"No key."}
        assert store.answers_in("c2", key_id=1) == set()

    def test_recent_turns_read_newest_first_and_by_rating(self, store: GatewayStore) -> None:
        for i in range(4):
            record(store, f"r{i}", at=float(i))
        store.add_feedback("r1", rating="down", key_id=1)
        assert [t["response_id"] for t in store.turns(limit=3)] == ["r3", "r2", "r1"]
        assert [t["response_id"] for t in store.turns(rating="down")] == ["r1"]

    def test_the_review_queue_holds_down_rated_and_handed_over_turns_until_corrected(self, store: GatewayStore) -> None:
        record(store, "down", at=1.0)
        record(store, "handoff", at=2.0, abstained=True)
        record(store, "fine", at=3.0)
        store.add_feedback("down", rating="down", key_id=1)
        store.add_feedback("fine", rating="up", key_id=1)
        assert [t["response_id"] for t in store.review_items("open", limit=10)] == ["handoff", "down"]
        store.add_feedback("down", rating="down", correction="Open Orders, then Return.", key_id=None)
        assert [t["response_id"] for t in store.review_items("open", limit=10)] == ["handoff"]
        [reviewed] = store.review_items("reviewed", limit=10)
        assert reviewed["correction"] == "Open Orders, then Return." and reviewed["check"] is None
        assert {t["response_id"] for t in store.review_items("all", limit=10)} == {"down", "handoff"}

    def test_a_corrections_check_is_the_latest_one_and_stale_once_the_correction_changes(
        self, store: GatewayStore
    ) -> None:
        record(store, "r1", at=1.0)
        store.add_feedback("r1", rating="down", correction="Open Orders.", key_id=None)
        store.record_check("r1", model="m1", fixed=False, outcome="missed", served="x", expect=["Orders"], at=1e12)
        store.record_check("r1", model="m2", fixed=True, outcome="said", served="y", expect=["Orders"], backed=True,
                           at=1e12)  # fmt: skip
        check = store.review_items("reviewed", limit=5)[0]["check"]
        assert check["model"] == "m2" and check["fixed"] is True and check["backed"] is True
        assert check["expect"] == ["Orders"] and check["stale"] is False
        store.record_check("r1", model="m3", fixed=None, outcome="", served="", expect=[], at=0.0)
        check = store.review_items("reviewed", limit=5)[0]["check"]
        assert check["fixed"] is None and check["backed"] is None and check["stale"] is True

    def test_training_turns_page_through_rated_up_and_corrected_turns_oldest_first(self, store: GatewayStore) -> None:
        for i in range(5):
            record(store, f"r{i}", at=1.0 if i < 3 else float(i))  # three at the same moment: the id breaks the tie
        store.add_feedback("r0", rating="up", key_id=1)
        store.add_feedback("r1", rating="down", key_id=1)
        store.add_feedback("r2", rating="down", correction="Better.", key_id=None)
        store.add_feedback("r4", rating="up", key_id=1)
        assert [t["response_id"] for t in store.training_turns(page=1)] == ["r0", "r2", "r4"]
        unrated = [t["response_id"] for t in store.training_turns(include_unrated=True, page=2)]
        assert unrated == ["r0", "r2", "r3", "r4"]

    def test_feedback_turns_follow_the_order_feedback_was_given_after_a_time(self, store: GatewayStore) -> None:
        for i in range(3):
            record(store, f"r{i}", at=float(i))
        store.add_feedback("r2", rating="up", key_id=1)
        store.add_feedback("r0", rating="down", key_id=1)
        first = list(store.feedback_turns(page=1))
        assert [t["response_id"] for t in first] == ["r2", "r0"] and first[0]["feedback_at"] <= first[1]["feedback_at"]
        store.add_feedback("r2", rating="down", key_id=1)  # now its latest feedback is the newest
        later = [t["response_id"] for t in store.feedback_turns(since=first[-1]["feedback_at"])]
        assert later == ["r2"]

    def test_turns_since_reads_every_turn_at_or_after_a_time_in_pages(self, store: GatewayStore) -> None:
        for i in range(5):
            record(store, f"r{i}", at=10.0 if i < 4 else 11.0)
        record(store, "old", at=9.0)
        assert [t["response_id"] for t in store.turns_since(10.0, page=2)] == ["r0", "r1", "r2", "r3", "r4"]

    # erasure and retention --------------------------------------------------------------------

    def test_erasing_a_key_removes_its_turns_its_feedback_and_its_failed_requests_text(
        self, store: GatewayStore
    ) -> None:
        _, key = store.create_key("customer", name="erase-me")
        record(store, "mine", at=1.0, key_id=key.id, withdrawn="draft")
        record(store, "theirs", at=2.0, key_id=key.id + 1)
        store.add_feedback("mine", rating="down", comment="bad", correction="Fix.", key_id=key.id)
        store.add_feedback("theirs", rating="up", comment="given by the erased key", key_id=key.id)
        store.audit(f"customer:{key.id}:", "request.failed", "POST /v1/feedback", {"status": 422, "error": "my text"})
        store.audit(f"customer:{key.id}0:", "request.failed", "POST /v1/feedback", {"error": "another key's"})
        counts = store.erase(key, actor="admin:1:")
        assert counts == {"turns": 1, "passages": 2, "drafts": 1, "feedback": 1, "comments": 1, "corrections": 1,
                          "feedback_given": 1, "audit_details": 1, "response_ids": ["mine"]}  # fmt: skip
        with pytest.raises(NotFoundError):
            store.turn("mine")
        assert store.turn("theirs")["rating"] is None
        failed = {e["actor"]: e["detail"] for e in store.audit_log() if e["action"] == "request.failed"}
        assert failed[f"customer:{key.id}:"] == {"status": 422, "error": "(erased)"}
        assert failed[f"customer:{key.id}0:"] == {"error": "another key's"}
        assert store.audit_log(1)[0]["action"] == "conversations.erase"

    def test_a_dry_run_counts_an_erasure_and_changes_nothing(self, store: GatewayStore) -> None:
        record(store, "r1", at=1.0, conversation="conv-x")
        store.add_feedback("r1", rating="down", comment="meh", key_id=1)
        counts = store.erase("conv-x", actor="cli", dry_run=True)
        assert counts["turns"] == 1 and counts["comments"] == 1 and counts["response_ids"] == ["r1"]
        assert store.turn("r1")["comment"] == "meh"
        assert store.erase("conv-x", actor="cli")["turns"] == 1 and store.turns() == []

    def test_purging_removes_turns_older_than_the_retention_period_with_their_feedback(
        self, store: GatewayStore
    ) -> None:
        now = 100 * 86400.0
        record(store, "old", at=now - 31 * 86400)
        record(store, "new", at=now - 29 * 86400)
        store.add_feedback("old", rating="down", correction="c", key_id=1)
        store.record_check("old", model="m", fixed=True, outcome="", served="", expect=[])
        counts = store.purge_expired(30, actor="gateway", now=now)
        assert counts["turns"] == 1 and counts["corrections"] == 1 and counts["before"] == now - 30 * 86400
        assert [t["response_id"] for t in store.turns()] == ["new"]
        assert store.review_items("all", limit=5) == []
        assert store.audit_log(1)[0]["action"] == "conversations.purge"

    # many callers ------------------------------------------------------------------------------

    def test_writes_from_many_threads_at_once_all_land(self, store: GatewayStore) -> None:
        def write(n: int) -> None:
            for i in range(10):
                record(store, f"t{n}-{i}", at=float(i), conversation=f"c{n}")
                store.audit(f"customer:{n}:", "chat", "", {"i": i})

        threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(store.turns(limit=1000)) == 80 and len(store.audit_log(limit=1000)) == 80

    def test_a_second_store_on_the_same_database_sees_everything_the_first_wrote(self, store: GatewayStore) -> None:
        key, _ = store.create_key("customer")
        record(store, "r1", at=1.0)
        other = GatewayStore(store.path, url=store.url)
        assert other.lookup(key) is not None and other.turn("r1")["answer"] == "Within 30 days."
        other.add_feedback("r1", rating="down", key_id=1)
        assert [t["response_id"] for t in store.review_items("open", limit=5)] == ["r1"]

    # console jobs ------------------------------------------------------------------------------

    def test_of_jobs_queued_at_once_through_two_stores_one_is_queued_and_the_others_are_told_its_id(
        self, store: GatewayStore
    ) -> None:
        stores, answers = [store, GatewayStore(store.path, url=store.url)], []

        def queue(n: int) -> None:
            row = {"id": f"job-{n}", "command": "train sft", "args": ["--x", str(n)], "actor": "a", "created_at": 1.0}
            answers.append((n, stores[n % 2].queue_job(row)))

        threads = [threading.Thread(target=queue, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        [winner] = [n for n, active in answers if active is None]
        assert {active for n, active in answers if n != winner} == {f"job-{winner}"}
        assert [(j["id"], j["state"], j["args"]) for j in store.jobs()] == [
            (f"job-{winner}", "queued", ["--x", str(winner)])
        ]

    def test_a_queued_job_is_claimed_by_one_runner_and_its_end_recorded_once(self, store: GatewayStore) -> None:
        store.queue_job({"id": "j1", "command": "eval gate", "args": [], "actor": "a", "created_at": 1.0})
        claims: list[str | None] = []
        threads = [threading.Thread(target=lambda h=h: claims.append(store.claim_job(host=h))) for h in "abcd"]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(claims, key=str) == [None, None, None, "j1"]
        store.job_started("j1", pid=42, pid_start="boot:1", log_path="/logs/j1/output.log")
        store.job_tail("j1", "50%")
        assert store.cancel_job("j1") == "running" and store.job("j1")["cancel_requested"] is True
        assert store.end_job("j1", state="cancelled", exit_code=143) is True
        assert store.end_job("j1", state="failed", exit_code=None) is False  # another runner saw it end too
        job = store.job("j1")
        assert (job["state"], job["exit_code"], job["log_tail"], job["pid"]) == ("cancelled", 143, "50%", 42)
        assert store.cancel_job("j1") == "cancelled" and store.jobs(state="running") == []

    def test_a_queued_job_cancelled_never_runs(self, store: GatewayStore) -> None:
        store.queue_job({"id": "j1", "command": "eval gate", "args": [], "actor": "a", "created_at": 1.0})
        assert store.cancel_job("j1") == "queued"
        assert store.job("j1")["state"] == "cancelled" and store.claim_job(host="a") is None
        next_job = {"id": "j2", "command": "eval gate", "args": [], "actor": "a", "created_at": 2.0}
        assert store.queue_job(next_job) is None  # a cancelled job is in nobody's way


class TestSQLiteGatewayStore(GatewayStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> GatewayStore:
        return GatewayStore(tmp_path / "gateway.sqlite")

    def test_the_sqlite_file_is_in_write_ahead_log_mode(self, store: GatewayStore) -> None:
        with store.engine.connect() as db:
            assert db.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert store.location == str(store.path)


@pytest.mark.integration
class TestPostgresGatewayStore(GatewayStoreContract):
    @pytest.fixture
    def store(self, postgres: PostgresServer, tmp_path: Path) -> GatewayStore:
        return GatewayStore(tmp_path / "unused.sqlite", url=postgres.new_database())

    def test_no_sqlite_file_is_made_and_the_location_is_the_server(self, store: GatewayStore) -> None:
        assert not store.path.exists() and not store.path.parent.joinpath("unused.sqlite-wal").exists()
        assert store.location.startswith("postgresql+psycopg://postgres@127.0.0.1:")
