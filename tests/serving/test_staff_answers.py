"""A staff correction reaches customers at once: the gateway serves it again to a question asked alike."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.testing.serving import Gateway, make_gateway

QUESTION = "How do I return an item and print the label?"
ALIKE = "How can I return an item and print a label?"
CORRECTION = "Open your orders, choose Return, print the label and drop the parcel off within 30 days."


@pytest.fixture
def gw(tmp_path: Path) -> Gateway:
    return make_gateway(tmp_path, staff_answers=True)


def correct(gw: Gateway, question: str = QUESTION, correction: str = CORRECTION) -> str:
    asked = gw.chat("customer", question).json()
    assert asked["outcome"] == "answered"  # the fake model's own answer
    resp = gw.client.post("/v1/feedback", json={"response_id": asked["id"], "rating": "down", "correction": correction},
                          headers=gw.headers("staff"))  # fmt: skip
    assert resp.status_code == 200, resp.text
    return asked["id"]


def generations(gw: Gateway) -> int:
    return sum(len(g.requests) for g in gw.backend.generators.values())


def test_a_question_asked_alike_after_a_correction_is_served_the_correction_without_generating(gw: Gateway) -> None:
    corrected = correct(gw)
    before = generations(gw)
    body = gw.chat("customer", ALIKE).json()
    assert body["outcome"] == "corrected" and body["abstained"] is False
    assert body["choices"][0]["message"]["content"] == CORRECTION
    assert [c["doc_id"] for c in body["citations"]] == ["returns"]
    assert generations(gw) == before
    logged = gw.store.turn(body["id"])
    assert logged["verification"]["outcome"] == "corrected"
    assert logged["verification"]["reason"] == f"staff correction {corrected}"


def test_the_correction_is_streamed_too(gw: Gateway) -> None:
    correct(gw)
    body = {"model": "helpline-support", "messages": [{"role": "user", "content": ALIKE}], "stream": True}
    with gw.client.stream("POST", "/v1/chat/completions", json=body, headers=gw.headers("customer")) as resp:
        events = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text.strip() == CORRECTION and events[-1]["outcome"] == "corrected"


def test_other_questions_and_figures_the_articles_do_not_state_are_answered_as_before(gw: Gateway) -> None:
    correct(gw)
    other = gw.chat("customer", "How much does express shipping cost?").json()
    assert other["outcome"] == "answered" and other["choices"][0]["message"]["content"] == "answer from fake-base"
    # a correction stating what the article does not (60 days) is never served again
    correct(gw, "How many days do I have to return an item?", "You have 60 days to return an item.")
    again = gw.chat("customer", "How many days do I have to return my item?").json()
    assert again["outcome"] != "corrected"


def test_a_correction_drawn_from_internal_passages_is_served_to_staff_only(gw: Gateway) -> None:
    staff_q = "How much goodwill credit may staff grant for a late parcel?"
    asked = gw.chat("staff", staff_q).json()
    answer = "Staff may grant a goodwill credit of up to 20 euros for a late parcel."
    gw.client.post("/v1/feedback", json={"response_id": asked["id"], "rating": "down", "correction": answer},
                   headers=gw.headers("staff"))  # fmt: skip
    assert gw.chat("staff", staff_q).json()["outcome"] == "corrected"
    customer = gw.chat("customer", staff_q).json()
    assert customer["outcome"] != "corrected" and "20 euros" not in customer["choices"][0]["message"]["content"]


def test_without_staff_answers_a_corrected_question_is_generated_anew(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    correct(gw)
    assert gw.chat("customer", ALIKE).json()["outcome"] == "answered"


def test_answers_are_counted_by_outcome_for_the_metrics(gw: Gateway) -> None:
    correct(gw)
    gw.chat("customer", ALIKE)
    metrics = gw.client.get("/metrics", headers=gw.headers("engineer")).text
    assert 'helpline_answers_total{outcome="answered"} 1.0' in metrics
    assert 'helpline_answers_total{outcome="corrected"} 1.0' in metrics
