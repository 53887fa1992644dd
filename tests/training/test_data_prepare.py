"""`data prepare` on small synthetic files written here (never dataset rows)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.training.data.prepare import PrepareOptions, prepare_dataset
from helpline.training.data.sources import load_source

INTENTS = ["cancel_order", "track_refund", "change_address", "reset_password"]
WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
]
TEMPLATES = [
    "how do I {verb} my {noun} number {n}",
    "I need help to {verb} the {noun} {n} asap",
    "can you tell me the way to {verb} a {noun}",
    "what is the procedure to {verb} {noun} {n} online",
    "hey, {verb} {noun} please",
]


def _write_csv(path: Path, rows: list[dict], columns=("instruction", "response", "intent", "category")) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        for row in rows:
            writer.writerow({c: row.get(c, "") for c in columns})
    return path


def _synthetic_rows() -> list[dict]:
    rows = []
    for i, intent in enumerate(INTENTS):
        verb, noun = intent.split("_")
        for t, template in enumerate(TEMPLATES):
            for k in range(4):  # four siblings of each template, differing in the id only
                rows.append(
                    {
                        "instruction": template.format(verb=verb, noun=noun, n=1000 + 37 * k + t),
                        "response": f"I understand you want to {verb} your {noun}, {WORDS[t]} {WORDS[5 + k]}. "
                        f"1. Open {{{{Website Name}}}}.\n2. Choose the {WORDS[9 + i]} {noun} option.",
                        "intent": intent,
                        "category": "X",
                    }
                )
    rows.append(dict(rows[0]))  # an exact duplicate
    return rows


@pytest.fixture
def synthetic_csv(tmp_path: Path) -> Path:
    return _write_csv(tmp_path / "support.csv", _synthetic_rows())


def _prepare(tmp_path: Path, source: str, **kw) -> dict:
    options = PrepareOptions(sources=[source], name="demo", validation=0.2, test=0.2, **kw)
    return prepare_dataset(options, datasets_dir=tmp_path / "datasets", count_tokens=None, context_length=None)


def test_prepare_writes_versioned_splits_with_manifest(tmp_path: Path, synthetic_csv: Path) -> None:
    manifest = _prepare(tmp_path, f"bitext:{synthetic_csv}")
    root = Path(manifest["path"])
    assert root.name == "v1"
    assert json.loads((root / "manifest.json").read_text())["dataset_hash"] == manifest["dataset_hash"]
    counts = {s: manifest["splits"][s]["count"] for s in ("train", "validation", "test")}
    assert manifest["counts"]["exact_duplicates_dropped"] == 1
    assert sum(counts.values()) == manifest["counts"]["kept"] == 80
    assert all(n > 0 for n in counts.values())
    for split in ("validation", "test"):  # stratified: every intent is in the held-out splits
        assert set(manifest["splits"][split]["per_intent"]) == set(INTENTS)
    first = json.loads((root / "train.jsonl").read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    assert _prepare(tmp_path, f"bitext:{synthetic_csv}")["version"] == "v2"


def test_template_siblings_never_cross_splits(tmp_path: Path, synthetic_csv: Path) -> None:
    manifest = _prepare(tmp_path, f"bitext:{synthetic_csv}")
    root = Path(manifest["path"])
    seen: dict[str, str] = {}
    for split in ("train", "validation", "test"):
        for line in (root / f"{split}.jsonl").read_text().splitlines():
            question = json.loads(line)["messages"][0]["content"]
            # The scrubber turns "number 1037" into a placeholder: siblings then share their question.
            skeleton = "".join(ch for ch in question if not ch.isdigit())
            assert seen.setdefault(skeleton, split) == split, f"{skeleton!r} leaked into {split}"


def test_wrong_columns_are_refused_naming_the_column(tmp_path: Path) -> None:
    bad = _write_csv(tmp_path / "bad.csv", [{"question": "hi", "answer": "hello"}], columns=("question", "answer"))
    with pytest.raises(DataError, match=r"bad\.csv: missing column\(s\) instruction, response, intent"):
        load_source(f"bitext:{bad}")


def test_empty_answer_is_refused_naming_the_row(tmp_path: Path) -> None:
    rows = [{"instruction": "hi", "response": "hello", "intent": "greet"}, {"instruction": "x", "intent": "greet"}]
    bad = _write_csv(tmp_path / "empty.csv", rows)
    with pytest.raises(DataError, match=r"empty\.csv: 1 malformed row\(s\): row 3: empty column\(s\) response"):
        load_source(f"bitext:{bad}")
    conversations, problems = load_source(f"bitext:{bad}", skip_invalid=True)
    assert len(conversations) == 1 and len(problems) == 1


def test_bitext_rows_are_numbered_as_a_spreadsheet_shows_them(tmp_path: Path) -> None:
    rows = [
        {"instruction": "hi", "response": "Hello.\nHow can I help?\nAsk away.", "intent": "greet", "category": "X"},
        {"instruction": "bye", "response": " ", "intent": "greet"},
        {"instruction": "  refund?  ", "response": "Refunds take 5 days.", "intent": " refund ", "category": "PAY"},
    ]
    path = _write_csv(tmp_path / "multi.csv", rows)
    conversations, problems = load_source(f"bitext:{path}", skip_invalid=True)
    assert problems == ["row 3: empty column(s) response"]  # row 3, though the file's line 5
    assert [c.origin for c in conversations] == ["multi.csv:2", "multi.csv:4"]
    assert conversations[1].messages[0] == {"role": "user", "content": "refund?"}
    assert (conversations[1].intent, conversations[1].category) == ("refund", "PAY")


def test_skipped_rows_are_counted_and_named_in_the_manifest(tmp_path: Path) -> None:
    rows = _synthetic_rows()
    rows[3] = {**rows[3], "intent": ""}
    path = _write_csv(tmp_path / "support.csv", rows)
    manifest = _prepare(tmp_path, f"bitext:{path}", skip_invalid=True)
    assert manifest["counts"]["invalid_skipped"] == 1
    assert manifest["invalid_rows"] == {f"bitext:{path}": ["row 5: empty column(s) intent"]}
    assert manifest["counts"]["loaded"] == len(rows) - 1


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"messages": [{"content": "hi"}, {"role": "assistant", "content": "hello"}]},
            r"messages\[0\]: missing 'role'",
        ),
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]}, "content: empty"),
        ({"messages": [{"role": "customer", "content": "hi"}]}, "is not one of"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "last message must be the assistant"),
        ({"text": "hi"}, "field 'messages'"),
    ],
)
def test_malformed_chat_jsonl_is_refused(tmp_path: Path, record: dict, message: str) -> None:
    path = tmp_path / "chat.jsonl"
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    path.write_text(json.dumps(good) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(DataError, match=rf"chat\.jsonl: 1 malformed row\(s\): line 2: .*{message}"):
        load_source(f"chat:{path}")


@pytest.mark.parametrize("kind", ["bitext", "chat", "reviewed"])
def test_a_file_that_is_not_utf8_is_refused_with_what_to_do(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "latin1.data"
    path.write_bytes("instruction,response,intent\ncafé,merci,greet\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.data: not UTF-8 text") as err:
        load_source(f"{kind}:{path}")
    assert "iconv" in (err.value.hint or "")


def test_reviewed_conversations_replace_the_bad_answer(tmp_path: Path) -> None:
    path = tmp_path / "reviewed.jsonl"
    record = {
        "messages": [{"role": "user", "content": "refund?"}, {"role": "assistant", "content": "no idea"}],
        "corrected_answer": "Refunds take 5 days.",
        "intent": "refund",
    }
    path.write_text(json.dumps(record) + "\n")
    (conv,), _ = load_source(f"reviewed:{path}")
    assert conv.messages[-1] == {"role": "assistant", "content": "Refunds take 5 days."}
    assert len(conv.messages) == 2


def test_too_long_conversations_are_dropped_and_counted(tmp_path: Path, synthetic_csv: Path) -> None:
    options = PrepareOptions(sources=[f"bitext:{synthetic_csv}"], name="demo", validation=0.2, test=0.2, max_tokens=25)
    manifest = prepare_dataset(
        options,
        datasets_dir=tmp_path / "datasets",
        count_tokens=lambda messages: sum(len(m["content"].split()) for m in messages),
        context_length=100,
    )
    assert manifest["counts"]["too_long_dropped"] > 0
    assert manifest["token_check"]["max_tokens"] == 25


def _doc2dial_folder(tmp_path: Path) -> tuple[Path, list[str]]:
    """A hand-written doc2dial-layout folder: 3 documents of one domain, 16 dialogues (some held out)."""
    from helpline.datasets.doc2dial import heldout as doc2dial_heldout

    folder = tmp_path / "d2d"
    folder.mkdir()
    docs = [
        {"doc_id": f"doc{i}", "domain": "dmv", "title": f"Topic {i}",
         "text": f"Intro {i}. " * 40 + f"The renewal fee for topic {i} is {i}5 dollars. " + "Outro. " * 40}
        for i in range(3)
    ]  # fmt: skip
    (folder / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    rows, heldout = [], []
    for n in range(16):
        dial, i = f"dial{n}", n % 3
        if doc2dial_heldout(dial):
            heldout.append(dial)
        history = [{"role": "user", "utterance": "Hello."}, {"role": "user", "utterance": "About renewals."},
                   {"role": "agent", "utterance": "Sure, what do you need?"}]  # fmt: skip
        rows.append({"id": f"{dial}_1", "dial_id": dial, "domain": "dmv", "doc_id": f"doc{i}",
                     "question": f"How much is the renewal for topic {i} number {n}?", "history": history,
                     "answer_span": "x", "answer_start": docs[i]["text"].index("The renewal"),
                     "agent_response": f"It costs {i}5 dollars." if n != 5 else None})  # fmt: skip
    (folder / "qa.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder, heldout


def test_doc2dial_source_renders_grounded_support_prompts(tmp_path: Path) -> None:
    folder, heldout = _doc2dial_folder(tmp_path)
    conversations, problems = load_source(f"doc2dial:{folder}")
    assert problems == [] and heldout  # the hash split keeps some of 16 dialogues for evaluation
    origins = {c.origin for c in conversations}
    assert len(conversations) == 16 - len(heldout) - (0 if "dial5" in heldout else 1)  # dial5 has no reply
    assert not any(f"qa.jsonl:{int(d[4:]) + 1}" in origins for d in heldout)
    conv = conversations[0]
    system, *turns = conv.messages
    assert system["role"] == "system" and "Northwind Goods" in system["content"]  # serving's support prompt
    n = int(conv.origin.split(":")[1]) - 1
    assert f"The renewal fee for topic {n % 3} is {n % 3}5 dollars." in system["content"]  # gold passage
    assert system["content"].count("Topic ") == 2  # and one same-domain distractor
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]  # same-speaker runs merged
    assert turns[0]["content"] == "Hello.\nAbout renewals."
    assert turns[-1] == {"role": "assistant", "content": f"It costs {n % 3}5 dollars."}
    assert conv.intent == "doc2dial:dmv" and conv.category == "grounded"


def test_doc2dial_distractor_is_a_passage_retrieval_would_rank_beside_the_gold_one(tmp_path: Path) -> None:
    folder, _ = _doc2dial_folder(tmp_path)
    unrelated = [
        {"doc_id": f"park{i}", "domain": "dmv", "title": f"Parking {i}", "text": f"Parking permit zone {i}. " * 30}
        for i in range(6)
    ]
    with (folder / "docs.jsonl").open("a") as fh:
        fh.write("".join(json.dumps(d) + "\n" for d in unrelated))
    conversations, _ = load_source(f"doc2dial:{folder}")
    for conv in conversations:
        system = conv.messages[0]["content"]
        n = int(conv.origin.split(":")[1]) - 1
        # Same domain, but of 8 other documents only the 2 about renewals answer a neighbouring question.
        assert system.count("The renewal fee for topic") == 2, conv.origin
        assert f"topic {n % 3} is {n % 3}5 dollars" in system and "Parking permit" not in system


def test_doc2dial_source_needs_both_files_and_names_bad_rows(tmp_path: Path) -> None:
    from helpline.platform.errors import NotFoundError

    with pytest.raises(NotFoundError, match=r"lacks docs\.jsonl, qa\.jsonl"):
        load_source(f"doc2dial:{tmp_path}")
    folder, _ = _doc2dial_folder(tmp_path)
    with (folder / "qa.jsonl").open("a") as fh:
        fh.write('{"dial_id": "x", "question": "q"}\n')
    with pytest.raises(DataError, match=r"qa.jsonl line 17: KeyError"):
        load_source(f"doc2dial:{folder}")


def test_doc2dial_bad_lines_are_named_in_line_order_and_the_others_kept(tmp_path: Path) -> None:
    folder, _ = _doc2dial_folder(tmp_path)
    clean, _ = load_source(f"doc2dial:{folder}")
    with (folder / "docs.jsonl").open("a") as fh:
        fh.write('{"doc_id": "torn"\n')
    with (folder / "qa.jsonl").open("a") as fh:
        fh.write(json.dumps({"dial_id": "xdial", "doc_id": "nodoc", "question": "q?", "answer_start": 0,
                             "agent_response": "a"}) + "\n")  # fmt: skip
        fh.write('{"dial_id": "x", "question": "q", "answer_start": 0}\n')
    conversations, problems = load_source(f"doc2dial:{folder}", skip_invalid=True)
    assert problems == [
        "docs.jsonl line 4: JSONDecodeError Expecting ',' delimiter: line 1 column 18 (char 17)",
        "qa.jsonl line 17: doc_id 'nodoc' is not in docs.jsonl",
        "qa.jsonl line 18: KeyError 'doc_id'",
    ]
    assert [c.to_json() for c in conversations] == [c.to_json() for c in clean]


def test_max_per_source_balances_a_mix(tmp_path: Path, synthetic_csv: Path) -> None:
    folder, _ = _doc2dial_folder(tmp_path)
    options = PrepareOptions(sources=[f"bitext:{synthetic_csv}", f"doc2dial:{folder}"], name="mix", validation=0.2,
                             test=0.2, max_per_source=6)  # fmt: skip
    manifest = prepare_dataset(options, datasets_dir=tmp_path / "datasets", count_tokens=None, context_length=None)
    assert manifest["counts"]["loaded"] == 12
    rows = [json.loads(line) for s in ("train", "validation", "test")
            for line in (Path(manifest["path"]) / f"{s}.jsonl").read_text().splitlines()]  # fmt: skip
    grounded = [r for r in rows if r["category"] == "grounded"]
    assert 0 < len(grounded) <= 6  # near-duplicate removal looks past the shared system prompt
    assert f"doc2dial:{folder}" in manifest["sources"]
