"""`helpline eval corrections`' core: each staff-corrected turn asked again, judged by the correction's facts, recorded
on the turn, shown in the review queue (stale once corrected again), and erased with the turn."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from improve_support import CORRECTED, seed_correction

from helpline.evaluation.answers import AnswerCase, ServedAnswer
from helpline.improve.recheck import check_corrections, correction_case
from helpline.serving.gateway.store import GatewayStore


@pytest.fixture
def store(tmp_path: Path) -> GatewayStore:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    for doc in ("refunds", "express"):
        seed_correction(store, doc)
    return store


def answers(served: dict[str, str], asked: list[AnswerCase]):
    """An answerer serving ``served[question]`` (the handoff for any other question), recording what it was asked."""

    def answer(case: AnswerCase) -> ServedAnswer:
        asked.append(case)
        text = served.get(case.question)
        outcome = "answered" if text else "handoff"
        return ServedAnswer(text=text or "I don't know.", outcome=outcome, citations=[], latency_ms=1.0)

    return answer


def test_a_correction_is_fixed_when_the_served_answer_states_its_fact(store: GatewayStore) -> None:
    refunds, express = CORRECTED["refunds"][0], CORRECTED["express"][0]
    asked: list[AnswerCase] = []
    served = {refunds: "Refunds arrive within 14 days.", express: "Express shipping is free."}  # the old mistake
    result, checks = check_corrections(store, answers(served, asked), model="prod-v2")
    by_q = {c.question: c for c in checks}
    assert by_q[refunds].fixed is True and by_q[express].fixed is False
    assert (result["checked"], result["fixed"], result["not_fixed"], result["fixed_rate"]) == (2, 1, 1, 0.5)
    assert {c.question for c in asked} == {refunds, express} and all(c.role == "customer" for c in asked)
    assert "14 days" in by_q[refunds].expect  # the correction's fact, not the question's words
    queue = {i["response_id"]: i["check"] for i in store.review_items("reviewed", limit=10)}
    assert queue["resp-refunds"]["fixed"] is True and queue["resp-refunds"]["model"] == "prod-v2"
    assert queue["resp-express"]["fixed"] is False and queue["resp-express"]["served"] == "Express shipping is free."
    assert not any(c["stale"] for c in queue.values())


def test_a_handoff_is_not_fixed(store: GatewayStore) -> None:
    result, _ = check_corrections(store, answers({}, []), model="prod")
    assert (result["fixed"], result["not_fixed"], result["outcomes"]) == (0, 2, {"handoff": 2})


def test_a_check_goes_stale_when_the_correction_is_saved_again_after_it(store: GatewayStore) -> None:
    check_corrections(store, answers({}, []), model="prod")
    store.add_feedback("resp-refunds", rating="down", comment="", correction="Refunds take 14 days or less.", key_id=2)
    queue = {i["response_id"]: i["check"] for i in store.review_items("reviewed", limit=10)}
    assert queue["resp-refunds"]["stale"] is True and queue["resp-express"]["stale"] is False


def test_a_correction_that_states_nothing_new_is_not_checkable_and_not_asked(store: GatewayStore) -> None:
    rid = seed_correction(store, "cancel", rid="resp-vague")
    question = CORRECTED["cancel"][0]
    store.add_feedback(rid, rating="down", comment="", correction=question, key_id=2)  # only the question's words
    assert correction_case(store.turn(rid))[0] is None
    asked: list[AnswerCase] = []
    result, _ = check_corrections(store, answers({}, asked), model="prod")
    assert question not in {c.question for c in asked} and result["not_checkable"] == 1
    assert {i["response_id"]: i["check"]["fixed"] for i in store.review_items("reviewed", limit=10)}[rid] is None


def test_nothing_is_recorded_without_record_and_an_unchecked_correction_shows_none(store: GatewayStore) -> None:
    check_corrections(store, answers({}, []), model="prod", record=False)
    assert all(i["check"] is None for i in store.review_items("all", limit=10))


def test_erasing_a_conversation_erases_its_checks(store: GatewayStore) -> None:
    check_corrections(store, answers({}, []), model="prod")
    store.erase("conv-resp-refunds", actor="admin:1:")
    left = store.review_items("all", limit=10)
    assert [i["response_id"] for i in left] == ["resp-express"] and left[0]["check"] is not None
    with sqlite3.connect(store.path) as db:  # the erased turn's check row itself is gone
        rows = db.execute("SELECT COUNT(*) FROM correction_checks WHERE response_id = 'resp-refunds'").fetchone()
    assert rows[0] == 0


def test_a_check_says_whether_the_help_centre_still_backs_each_correction(store: GatewayStore) -> None:
    refunds = CORRECTED["refunds"][0]
    backed_for: list[tuple[str, str]] = []

    def backing(case: AnswerCase, correction: str) -> bool:
        backed_for.append((case.question, correction))
        return case.question == refunds  # the express article changed since its correction

    result, checks = check_corrections(store, answers({}, []), model="prod", backing=backing)
    assert {c.question: c.backed for c in checks} == {refunds: True, CORRECTED["express"][0]: False}
    assert result["retired"] == 1
    corrections = {i["correction"] for i in store.review_items("reviewed", limit=10)}
    assert {correction for _, correction in backed_for} == corrections and len(corrections) == 2
    queue = {i["response_id"]: i["check"]["backed"] for i in store.review_items("reviewed", limit=10)}
    assert queue == {"resp-refunds": True, "resp-express": False}


def test_a_checks_table_from_before_the_backed_column_gains_it_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite"
    GatewayStore(path)
    with sqlite3.connect(path) as db:  # as an earlier release created it (before Alembic)
        db.execute("DROP TABLE alembic_version")
        db.execute("DROP TABLE correction_checks")
        db.execute("CREATE TABLE correction_checks (response_id TEXT PRIMARY KEY, at REAL NOT NULL,"
                   " model TEXT NOT NULL, fixed INTEGER, outcome TEXT NOT NULL DEFAULT '',"
                   " served TEXT NOT NULL DEFAULT '', expect TEXT NOT NULL DEFAULT '[]')")  # fmt: skip
        db.execute("INSERT INTO correction_checks VALUES ('resp-old', 1.0, 'prod', 1, 'answered', 'x', '[]')")
    store = GatewayStore(path)
    store.record_check("resp-refunds", model="prod", fixed=True, outcome="answered", served="y", expect=[], backed=True)
    with sqlite3.connect(path) as db:
        rows = dict(db.execute("SELECT response_id, backed FROM correction_checks").fetchall())
    assert rows == {"resp-old": None, "resp-refunds": 1}
