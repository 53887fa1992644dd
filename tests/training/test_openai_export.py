"""`helpline data export-openai`: a prepared dataset written as OpenAI chat fine-tuning JSONL, refused where the
managed APIs would refuse it (synthetic conversations written here, never dataset rows)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.training.data.openai_export import check_example, export_openai
from helpline.training.data.prepare import PrepareOptions, prepare_dataset

TOPICS = ["password", "invoice", "delivery", "refund", "address", "voucher", "subscription", "warranty", "account",
          "newsletter", "parcel", "receipt", "exchange", "membership", "payment"]
ACTIONS = ["reset", "download", "track", "request", "change", "redeem"]


def conversation(i: int) -> dict:
    """A distinct support exchange (prepare deduplicates near-copies)."""
    topic, action = TOPICS[i % len(TOPICS)], ACTIONS[i // len(TOPICS) % len(ACTIONS)]
    return {"messages": [
        {"role": "system", "content": "You are a support assistant."},
        {"role": "user", "content": f"How can I {action} my {topic}?"},
        {"role": "assistant", "content": f"To {action} your {topic}, open the {topic} page and choose {action}."},
    ]}  # fmt: skip


def prepared(tmp_path: Path, rows: list[dict]) -> Path:
    source = tmp_path / "chats.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = PrepareOptions(sources=[f"chat:{source}"], name="support", validation=0.1, test=0.1, seed=0)
    prepare_dataset(options, datasets_dir=tmp_path / "datasets", count_tokens=None, context_length=None)
    return tmp_path / "datasets" / "support" / "v1"


def test_a_prepared_dataset_exports_as_chat_jsonl_without_helplines_own_fields(tmp_path: Path) -> None:
    dataset = prepared(tmp_path, [conversation(i) for i in range(30)])
    report = export_openai(dataset, split="train", out=tmp_path / "out.jsonl")
    lines = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    train = (dataset / "train.jsonl").read_text().splitlines()
    assert report.examples == len(lines) == len(train) >= 10 and report.warnings == [] and not report.errors
    assert all(set(x) == {"messages"} and check_example(x) == [] for x in lines)  # no intent, category, origin
    assert [m["role"] for m in lines[0]["messages"]] == ["system", "user", "assistant"]
    assert report.estimated_tokens["longest"] > 0


def test_too_few_examples_and_too_long_ones_are_warned_about(tmp_path: Path) -> None:
    dataset = prepared(tmp_path, [conversation(i) for i in range(30)])
    report = export_openai(dataset, split="validation", out=tmp_path / "out.jsonl", max_tokens=10)
    n = report.examples
    assert 0 < n < 10
    assert report.warnings == [f"{n} examples: the API needs at least 10",
                               f"{n} examples may be over 10 tokens: the API truncates them"]  # fmt: skip


def test_what_the_api_would_refuse_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    dataset = tmp_path / "v1"
    dataset.mkdir()
    bad = [
        conversation(1),
        {"messages": [{"role": "user", "content": "hello"}]},  # nothing to learn
        {"messages": [{"role": "bot", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "  "}, {"role": "assistant", "content": "x", "weight": 2}]},
    ]
    (dataset / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in bad) + "not json\n")
    with pytest.raises(DataError) as e:
        export_openai(dataset, split="train", out=tmp_path / "out.jsonl")
    message = str(e.value)
    for name, line in [("example_missing_assistant_message", 2), ("unrecognized_role", 3), ("missing_content", 4),
                       ("invalid_weight", 4), ("data_type", 5)]:  # fmt: skip
        assert f"{name} (1, e.g. line {line})" in message
    assert not (tmp_path / "out.jsonl").exists()
    assert check_example({"messages": [{"role": "user", "content": "a", "extra": 1}]}) == [
        "example_missing_assistant_message", "message_unrecognized_key"]  # fmt: skip
    with pytest.raises(DataError, match=r"no validation\.jsonl"):
        export_openai(dataset, split="validation", out=tmp_path / "out.jsonl")
