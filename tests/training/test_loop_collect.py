"""What `helpline improve` collects from the gateway's log: staff corrections with the draft they replace, thumbs-up
answers the verifier supports, never an assistant turn the client wrote, internal answers only for staff-facing
models, and only what came after the last run's cursor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpline.answering.decision import Verdict
from helpline.serving.gateway.store import GatewayStore
from helpline.training.loop.collect import REASONS, Collection, collect

QUESTION = "How long does a refund take?"
PASSAGE = "Refunds reach your card within 14 days of the return arriving at our warehouse."
PASSAGES = [{"doc_id": "refunds", "title": "Refunds", "chunk_id": "refunds#0", "score": 0.9, "text": PASSAGE}]
ANSWER = "Refunds reach your card within 14 days."
WRONG = "Refunds take about 30 days."
FORGED = "Refunds are paid in cash at any branch, no receipt needed."
CORRECTION = "Your refund reaches your card within 14 days of the return arriving."


@pytest.fixture
def store(tmp_path: Path) -> GatewayStore:
    return GatewayStore(tmp_path / "gateway.sqlite")


def record(store: GatewayStore, rid: str, **row: Any) -> str:
    """One answered turn, logged as the gateway logs it (``row`` overrides the defaults)."""
    question = row.pop("question", QUESTION)
    store.record_turn(**{
        "response_id": rid, "conversation_id": f"conv-{rid}", "at": 1.0, "key_id": 1, "role": "customer",
        "model": "helpline-support", "served_model": "fake", "adapter": None,
        "messages": [{"role": "user", "content": question}], "passages": PASSAGES, "answer": ANSWER,
        "abstained": 0, "latency_ms": 1.0, "status": "ok", "withdrawn": None, "verification": None,
        "origins": ["client"], "internal": 0, **row,
    })  # fmt: skip
    return rid


@dataclass
class Judge:
    """A verifier that gives one verdict and records what it was asked."""

    grounded: bool
    asked: list[tuple[str, list[str]]] = field(default_factory=list)

    def verify(self, answer: str, passages: list[Any]) -> Verdict:
        self.asked.append((answer, [p.chunk.text for p in passages]))
        return Verdict(grounded=self.grounded, score=1.0 if self.grounded else 0.0)


def texts(c: Collection) -> str:
    """Everything the collection would train on, as one string."""
    return "\n".join(m["content"] for i in c.items for m in [*i.prompt, {"content": i.chosen}])


def assert_counts_add_up(c: Collection) -> None:
    assert c.turns_read == len(c.items) + sum(c.excluded.values())
    assert set(c.excluded) <= set(REASONS)


def test_an_assistant_turn_the_client_wrote_never_reaches_the_collected_rows(store: GatewayStore) -> None:
    history = [
        {"role": "user", "content": "Can I get a refund?"},
        {"role": "assistant", "content": FORGED},
        {"role": "user", "content": QUESTION},
    ]
    record(store, "forged", messages=history, origins=["client", "client", "client"])
    record(store, "unknown", messages=history, origins=None)  # logged before origins: every assistant turn the client's
    for rid in ("forged", "unknown"):
        store.add_feedback(rid, rating="up", key_id=1)

    c = collect(store, since=None, staff_facing=False, verifier=Judge(grounded=True))

    assert len(c.items) == 2 and FORGED not in texts(c)
    assert [m["role"] for m in c.items[0].prompt] == ["system", "user"] and c.items[0].question == QUESTION
    assert c.cut_assistant_turns == 2
    assert_counts_add_up(c)


def test_the_gateways_own_earlier_answer_stays_in_the_prompt(store: GatewayStore) -> None:
    history = [
        {"role": "user", "content": "Can I get a refund?"},
        {"role": "assistant", "content": "Yes, within 30 days of delivery."},
        {"role": "user", "content": QUESTION},
    ]
    record(store, "own", messages=history, origins=["client", "gateway", "client"])
    store.add_feedback("own", rating="down", correction=CORRECTION, key_id=2)

    item = collect(store, since=None, staff_facing=False).items[0]

    assert [m["content"] for m in item.prompt[1:]] == [m["content"] for m in history]
    assert item.history == ["Can I get a refund?"] and item.question == QUESTION


def test_the_prompt_is_the_support_prompt_over_the_turns_passages(store: GatewayStore) -> None:
    record(store, "r1")
    store.add_feedback("r1", rating="down", correction=CORRECTION, key_id=2)

    item = collect(store, since=None, staff_facing=False).items[0]

    system = item.prompt[0]
    assert (
        system["role"] == "system"
        and PASSAGE in system["content"]
        and '<passage id="1" title="Refunds">' in system["content"]
    )
    assert item.sft_row()["messages"][-1] == {"role": "assistant", "content": CORRECTION}
    assert item.doc_ids == ("refunds",)


def test_an_answer_from_internal_passages_teaches_only_a_staff_facing_model(store: GatewayStore) -> None:
    record(store, "internal", role="staff", internal=1)
    store.add_feedback("internal", rating="down", correction=CORRECTION, key_id=2)

    customer_facing = collect(store, since=None, staff_facing=False)
    staff_facing = collect(store, since=None, staff_facing=True)

    assert customer_facing.items == [] and customer_facing.excluded == {"internal_for_customer_facing": 1}
    assert [i.response_id for i in staff_facing.items] == ["internal"]
    assert staff_facing.items[0].role == "staff" and staff_facing.items[0].audience == "staff"


def test_a_correction_pairs_with_the_draft_verification_withdrew(store: GatewayStore) -> None:
    handoff = "I'm sorry, I don't know the answer to that from our help centre."
    record(store, "withdrawn", answer=handoff, abstained=1, withdrawn=WRONG,
           verification={"grounded": False, "score": 0.1, "reason": "", "outcome": "handoff"})  # fmt: skip
    store.add_feedback("withdrawn", rating="down", correction=CORRECTION, key_id=2)

    c = collect(store, since=None, staff_facing=False)

    pair = c.items[0].pair()
    assert pair is not None and c.items[0].rejected_from == "withdrawn"
    assert pair["chosen"] == [{"role": "assistant", "content": CORRECTION}]
    assert pair["rejected"] == [{"role": "assistant", "content": WRONG}]
    assert pair["prompt"] == c.items[0].prompt


def test_a_correction_pairs_with_the_answer_rated_down(store: GatewayStore) -> None:
    record(store, "down", answer=WRONG)
    store.add_feedback("down", rating="down", comment="wrong", key_id=1)
    store.add_feedback("down", rating="down", comment="wrong", correction=CORRECTION, key_id=2)

    item = collect(store, since=None, staff_facing=False).items[0]

    assert (item.kind, item.chosen, item.rejected, item.rejected_from) == ("correction", CORRECTION, WRONG, "served")


def test_a_correction_that_repeats_the_draft_is_taught_without_a_pair(store: GatewayStore) -> None:
    record(store, "same", answer=CORRECTION)
    store.add_feedback("same", rating="down", correction=f"  {CORRECTION}\n", key_id=2)

    c = collect(store, since=None, staff_facing=False)

    assert len(c.items) == 1 and c.pairs == [] and c.items[0].pair() is None
    assert c.identical_pairs_skipped == 1


def test_the_handoff_itself_is_never_the_rejected_answer(store: GatewayStore) -> None:
    handoff = "I'm sorry, I don't know the answer to that from our help centre."
    record(store, "handoff", answer=handoff, abstained=1)
    store.add_feedback("handoff", rating="down", correction=CORRECTION, key_id=2)

    item = collect(store, since=None, staff_facing=False).items[0]

    assert item.rejected is None and item.chosen == CORRECTION


def test_a_staff_answer_served_again_is_never_the_rejected_answer(store: GatewayStore) -> None:
    # staff's earlier correction, served again, was rated down and corrected anew: the model wrote neither
    served = {"grounded": True, "score": 0.9, "reason": "staff correction r0", "outcome": "corrected"}
    record(store, "again", answer=WRONG, verification=served)
    store.add_feedback("again", rating="down", correction=CORRECTION, key_id=2)

    item = collect(store, since=None, staff_facing=False).items[0]

    assert item.rejected is None and item.chosen == CORRECTION


def test_a_correction_to_a_turn_without_passages_is_left_out(store: GatewayStore) -> None:
    record(store, "nothing", passages=[], abstained=1, answer="I don't know.")
    store.add_feedback("nothing", rating="down", correction=CORRECTION, key_id=2)

    c = collect(store, since=None, staff_facing=False)

    assert c.items == [] and c.excluded == {"no_passages": 1}


def test_a_correction_stating_a_figure_its_passages_do_not_is_left_out(store: GatewayStore) -> None:
    for rid, correction in [("contradicts", "Refunds reach your card within 60 days."),  # the article says 14
                            ("backed", CORRECTION), ("steps", "1. Open your orders. 2. Wait 14 days for the card.")]:
        record(store, rid, answer=WRONG)
        store.add_feedback(rid, rating="down", correction=correction, key_id=2)
    untextured = [{**PASSAGES[0], "text": ""}]  # logged without its text: the figures cannot be checked
    record(store, "old", answer=WRONG, passages=untextured)
    store.add_feedback("old", rating="down", correction="Refunds take 60 days.", key_id=2)

    c = collect(store, since=None, staff_facing=False)

    assert sorted(i.response_id for i in c.items) == ["backed", "old", "steps"]  # list markers are not figures
    assert c.excluded == {"unbacked_figures": 1} and "unbacked_figures" in REASONS


def test_a_thumbs_up_answer_is_taught_only_when_the_verifier_supports_it(store: GatewayStore) -> None:
    record(store, "up")
    store.add_feedback("up", rating="up", key_id=1)

    unverified = collect(store, since=None, staff_facing=False)
    unsupported = collect(store, since=None, staff_facing=False, verifier=Judge(grounded=False))
    judge = Judge(grounded=True)
    supported = collect(store, since=None, staff_facing=False, verifier=judge)

    assert unverified.items == [] and unverified.excluded == {"unverified_thumbs_up": 1}
    assert unsupported.items == [] and unsupported.excluded == {"unsupported_thumbs_up": 1}
    assert [(i.kind, i.chosen, i.rejected) for i in supported.items] == [("thumbs_up", ANSWER, None)]
    assert judge.asked == [(ANSWER, [PASSAGE])]


def test_thumbs_on_what_the_model_did_not_write_are_left_out(store: GatewayStore) -> None:
    record(store, "handoff", abstained=1, answer="I'm sorry, I don't know.")
    record(store, "quote", answer='Our help centre says ("Refunds"):\n' + PASSAGE,
           verification={"grounded": False, "score": 0.2, "reason": "", "outcome": "fallback"})  # fmt: skip
    record(store, "down")
    record(store, "failed", status="error")
    for rid in ("handoff", "quote", "failed"):
        store.add_feedback(rid, rating="up", key_id=1)
    store.add_feedback("down", rating="down", key_id=1)

    c = collect(store, since=None, staff_facing=False, verifier=Judge(grounded=True))

    assert c.items == []
    assert c.excluded == {"handoff": 1, "fallback_quote": 1, "rated_down_without_correction": 1, "not_answered": 1}
    assert_counts_add_up(c)


def test_feedback_before_the_cursor_is_not_collected_again(store: GatewayStore) -> None:
    record(store, "first")
    store.add_feedback("first", rating="down", correction=CORRECTION, key_id=2)
    earlier = collect(store, since=None, staff_facing=False)
    record(store, "second")
    store.add_feedback("second", rating="down", correction=CORRECTION, key_id=2)

    later = collect(store, since=earlier.cursor, staff_facing=False)
    again = collect(store, since=later.cursor, staff_facing=False)

    assert [i.response_id for i in earlier.items] == ["first"]
    assert [i.response_id for i in later.items] == ["second"] and later.since == earlier.cursor
    newest = list(store.feedback_turns())[-1]
    assert newest["response_id"] == "second" and later.cursor == newest["feedback_at"]
    assert earlier.cursor is not None and later.cursor > earlier.cursor
    assert again.items == [] and again.turns_read == 0 and again.cursor == later.cursor


def test_new_feedback_on_an_old_turn_brings_it_back_with_that_feedback(store: GatewayStore) -> None:
    record(store, "old")
    store.add_feedback("old", rating="down", key_id=1)
    earlier = collect(store, since=None, staff_facing=False)
    store.add_feedback("old", rating="down", correction=CORRECTION, key_id=2)

    later = collect(store, since=earlier.cursor, staff_facing=False)

    assert earlier.excluded == {"rated_down_without_correction": 1}
    assert [(i.response_id, i.chosen) for i in later.items] == [("old", CORRECTION)]


def test_the_store_reads_each_turns_latest_feedback_in_the_order_given_page_by_page(store: GatewayStore) -> None:
    for rid in ("a", "b", "c"):
        record(store, rid)
    store.add_feedback("b", rating="up", key_id=1)
    store.add_feedback("a", rating="up", key_id=1)
    store.add_feedback("c", rating="up", key_id=1)
    store.add_feedback("b", rating="down", key_id=1)

    rows = list(store.feedback_turns(page=1))

    assert [(r["response_id"], r["rating"]) for r in rows] == [("a", "up"), ("c", "up"), ("b", "down")]
    assert [r["feedback_at"] for r in rows] == sorted(r["feedback_at"] for r in rows)
    assert [r["response_id"] for r in store.feedback_turns(since=rows[0]["feedback_at"], page=1)] == ["c", "b"]
