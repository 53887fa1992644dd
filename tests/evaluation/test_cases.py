"""Suite files: the shipped ones load; malformed ones are refused with file, case and field named."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from helpline.evaluation.regression.cases import load_suite
from helpline.evaluation.regression.generators import bitext_cases, suite_cases
from helpline.platform.errors import DataError, NotFoundError

SUITES = Path(__file__).resolve().parents[2] / "helpline" / "evaluation" / "suites"


@pytest.mark.parametrize("name", ["support.yaml", "general.yaml", "generated.yaml"])
def test_shipped_suites_are_valid(name: str) -> None:
    suite = load_suite(SUITES / name)
    assert suite.cases or suite.generate


def test_support_suite_covers_the_expectation_kinds() -> None:
    suite = load_suite(SUITES / "support.yaml")
    cats = {c.category for c in suite.cases}
    assert {"returns", "abstention", "safety"} <= cats
    assert any(c.history for c in suite.cases)
    assert any(c.expect.must_abstain for c in suite.cases)


def _write(tmp_path: Path, text: str, name: str = "suite.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_misspelled_field_names_file_case_and_field(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: s\ncases:\n  - id: ok\n    question: q\n    expect: {must_contain: [a]}\n"
        "  - id: typo-case\n    question: q\n    expect: {must_contian: [a]}\n",
    )
    with pytest.raises(DataError) as err:
        load_suite(path)
    message = str(err.value)
    assert str(path) in message
    assert "'typo-case' (#2)" in message
    assert "expect.must_contian" in message


def test_missing_question_and_empty_expectations_are_both_reported(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: s\ncases:\n  - id: a\n    expect: {}\n")
    with pytest.raises(DataError) as err:
        load_suite(path)
    assert "field question" in str(err.value)
    assert "no checks" in str(err.value)


def test_duplicate_ids_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    dup = "name: s\ncases:\n" + "  - {id: a, question: q, expect: {must_contain: [x]}}\n" * 2
    with pytest.raises(DataError, match="duplicate case ids: a"):
        load_suite(_write(tmp_path, dup))
    with pytest.raises(DataError, match="cannot parse"):
        load_suite(_write(tmp_path, "name: [unclosed", "bad.yaml"))
    with pytest.raises(NotFoundError):
        load_suite(tmp_path / "absent.yaml")


def test_jsonl_suite_uses_file_stem_and_validates_rows(tmp_path: Path) -> None:
    good = _write(tmp_path, '{"id": "a", "question": "q", "expect": {"must_abstain": true}}\n', "mine.jsonl")
    assert load_suite(good).name == "mine"
    bad = _write(tmp_path, '{"id": "a", "question": "q", "expect": {"must_abstain": "sometimes"}}\n', "bad.jsonl")
    with pytest.raises(DataError, match=r"field expect\.must_abstain"):
        load_suite(bad)


def test_generated_suite_needs_its_data(tmp_path: Path) -> None:
    suite = load_suite(SUITES / "generated.yaml")
    with pytest.raises(NotFoundError, match="--data-dir"):
        suite_cases(suite, data_dir=tmp_path)


def test_generators_build_cases_from_shared_data(shared_data: Path) -> None:
    cases = suite_cases(load_suite(SUITES / "generated.yaml"), data_dir=shared_data)
    bitext = [c for c in cases if "bitext" in c.tags]
    doc2dial = [c for c in cases if "doc2dial" in c.tags]
    assert len({c.category for c in bitext}) > 5  # spread over intents' categories
    assert all(c.context and c.expect.must_cite == [c.context[0].doc_id] for c in doc2dial)
    assert all("{{" not in (c.expect.reference or "") for c in bitext)


def test_bitext_cases_skip_rows_with_an_empty_column_and_spread_over_intents(tmp_path: Path) -> None:
    path = tmp_path / "support.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["instruction", "response", "intent", "category"])
        writer.writerow(["", "Sure, I can help with that order.", "cancel_order", "ORDER"])
        writer.writerow(["cancel my order", "Sure, open {{Orders}} and cancel it.", "cancel_order", "ORDER"])
        writer.writerow(["where is my refund", "Refunds take five days.", "track_refund", "REFUND"])
    cases = bitext_cases(path, n=5)
    assert [(c.id, c.category, c.question) for c in cases] == [
        ("bitext-cancel_order-0", "bitext:order", "cancel my order"),
        ("bitext-track_refund-1", "bitext:refund", "where is my refund"),
    ]
    assert cases[0].expect.reference == "Sure, open  and cancel it."


def test_bitext_cases_refuse_a_file_without_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "chat.csv"
    path.write_text("question,answer\nhi,hello\n")
    with pytest.raises(DataError, match=r"chat\.csv: missing column\(s\) instruction, response, intent") as err:
        bitext_cases(path, n=3)
    assert "instruction, response, intent" in (err.value.hint or "")


def test_bad_regex_and_bad_schema_are_refused(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "name: s\ncases:\n  - id: rx\n    question: q\n    expect: {regex: ['(unclosed']}\n"
        "  - id: js\n    question: q\n    expect: {json_schema: {type: 12}}\n",
    )
    with pytest.raises(DataError) as err:
        load_suite(path)
    assert "'rx' (#1)" in str(err.value) and "does not compile" in str(err.value)
    assert "'js' (#2)" in str(err.value) and "not a valid JSON Schema" in str(err.value)


def test_unreadable_suite_files_are_refused_with_where_and_what(tmp_path: Path, monkeypatch) -> None:
    from helpline.evaluation.regression import cases as cases_module

    row = '{"id": "a", "question": "q", "expect": {"must_abstain": true}}\n'
    torn = _write(tmp_path, row + '{"id": "b", \n', "torn.jsonl")
    with pytest.raises(DataError, match=r"torn\.jsonl:2: not valid JSON"):
        load_suite(torn)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"name: s\n\xc0\xff\xfe cases")
    with pytest.raises(DataError, match="not UTF-8 text"):
        load_suite(binary)
    monkeypatch.setattr(cases_module, "MAX_SUITE_BYTES", 64)
    with pytest.raises(DataError, match=r"over the .* a suite file may have"):
        load_suite(
            _write(tmp_path, "name: s\ncases:\n" + "  - {id: a, question: q, expect: {must_abstain: yes}}\n" * 3)
        )


def test_a_bundled_suite_is_named_without_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing called support(.yaml) here
    assert load_suite("support").name == load_suite("support.yaml").name == "support"
    mine = "name: mine\ncases:\n  - {id: a, question: q, expect: {must_abstain: true}}\n"
    (tmp_path / "support.yaml").write_text(mine)
    assert load_suite("support.yaml").name == "mine"  # a file that exists wins over the bundled one
    with pytest.raises(NotFoundError) as err:
        load_suite("suport")
    assert "support" in err.value.hint and "general" in err.value.hint  # names the bundled suites
