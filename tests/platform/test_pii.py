"""The one PII scrubber, and the same placeholders from every path that writes customer text down."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from helpline.platform.pii import measure_recall, scrub, scrub_messages
from helpline.serving.gateway.conversations import export_jsonl, training_rows
from helpline.testing.serving import make_gateway
from helpline.training.data.prepare import PrepareOptions, pii_sample, prepare_dataset


@pytest.mark.parametrize(
    ("text", "value", "placeholder"),
    [
        ("Mail me at a.b@shop.co.uk today", "a.b@shop.co.uk", "{{Email}}"),
        ("call +44 20 7946 0958 after six", "+44 20 7946 0958", "{{Phone Number}}"),
        ("my number changed to 555-867-5309", "555-867-5309", "{{Phone Number}}"),
        ("call 4155550132 tomorrow", "4155550132", "{{Phone Number}}"),
        ("or call +14155550132", "+14155550132", "{{Phone Number}}"),
        ("paid with 4111 1111 1111 1111 twice", "4111 1111 1111 1111", "{{Credit Card Number}}"),
        ("the card 1234 5678 9012 3456 is not mine", "1234 5678 9012 3456", "{{Credit Card Number}}"),
        ("refund to DE89 3704 0044 0532 0130 00 please", "DE89 3704 0044 0532 0130 00", "{{IBAN}}"),
        ("IBAN GB82WEST12345698765432", "GB82WEST12345698765432", "{{IBAN}}"),
        ("my SSN is 123-45-6789", "123-45-6789", "{{Social Security Number}}"),
        ("ship it to 221B Baker Street, London", "221B Baker Street", "{{Street Address}}"),
        ("where is order ORD-55123?", "ORD-55123", "{{Order Number}}"),
        ("customer id: CU-10293 asks for a callback", "CU-10293", "{{Account Number}}"),
    ],
)
def test_each_kind_of_pii_is_replaced_by_its_placeholder(text: str, value: str, placeholder: str) -> None:
    clean, counts = scrub(text)
    assert value not in clean
    assert placeholder in clean
    assert sum(counts.values()) == 1


@pytest.mark.parametrize(
    "text",
    [
        "The delivery takes 3-5 business days.",
        "I ordered 3 items for 45 dollars on 12 March.",
        "Is the 2023 catalogue still valid?",
        "Your refund was issued on 12/03/2024 and reached the card on 2024-03-15.",
        "Step 2: open {{Order History}} and click {{Cancel Order}}.",
        "Your order {{Order Number}} ships from {{Street Address}}; call {{Phone Number}}.",
    ],
)
def test_text_without_pii_is_unchanged(text: str) -> None:
    assert scrub(text) == (text, {})


def test_every_piece_of_a_message_is_counted_by_kind() -> None:
    text, counts = scrub("mail me: ann@example.com, order 5512345, card 4111 1111 1111 1111, call +1 415 555 0101")
    assert text == "mail me: {{Email}}, order {{Order Number}}, card {{Credit Card Number}}, call {{Phone Number}}"
    assert counts == {"email": 1, "order_id": 1, "card": 1, "phone": 1}


def test_scrubbing_messages_keeps_roles_and_other_fields() -> None:
    messages = [
        {"role": "user", "content": "I am jo@example.com", "name": "jo"},
        {"role": "assistant", "content": "Hi"},
    ]
    clean, counts = scrub_messages(messages)
    assert clean == [
        {"role": "user", "content": "I am {{Email}}", "name": "jo"},
        {"role": "assistant", "content": "Hi"},
    ]
    assert counts == {"email": 1}
    assert messages[0]["content"] == "I am jo@example.com"  # the input is left as it was


def test_recall_on_the_labelled_sample_is_high_without_false_positives() -> None:
    report = measure_recall(pii_sample())
    assert report["labelled_items"] >= 25
    assert report["recall"] >= 0.9, report["missed"]
    assert report["false_positives"] == 0


def test_log_export_and_data_prepare_write_the_same_placeholders(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    question = "I am jane@example.com, call 020 7946 0958 about order 78201934, how do I return an item?"
    expected = "I am {{Email}}, call {{Phone Number}} about order {{Order Number}}, how do I return an item?"
    gateway = make_gateway(tmp_path)
    with caplog.at_level(logging.INFO, logger="helpline.gateway"):
        answer = gateway.chat("customer", question).json()
    rating = {"response_id": answer["id"], "rating": "up"}  # only rated turns are exported
    assert gateway.client.post("/v1/feedback", json=rating, headers=gateway.headers("customer")).status_code == 200

    logged = " ".join(r.getMessage() for r in caplog.records if r.name == "helpline.gateway")
    assert "jane@example.com" not in logged and repr(expected[:200]) in logged

    [exported] = training_rows(gateway.store)
    assert exported["messages"][0]["content"] == expected

    raw = tmp_path / "raw.jsonl"
    assert export_jsonl(gateway.store, raw, scrub=False) == 1
    assert question in raw.read_text()
    options = PrepareOptions(sources=[f"chat:{raw}"], name="pii", validation=0.2, test=0.2)
    manifest = prepare_dataset(options, datasets_dir=tmp_path / "datasets", count_tokens=None, context_length=None)
    lines = [line for split in ("train", "validation", "test") for line in _lines(Path(manifest["path"]), split)]
    assert [json.loads(line)["messages"][0]["content"] for line in lines] == [expected]


def _lines(root: Path, split: str) -> list[str]:
    return (root / f"{split}.jsonl").read_text().splitlines()
