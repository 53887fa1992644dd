"""Files a user points helpline at: each problem is named with its file, line and what to do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.datasets.doc2dial import read_doc2dial
from helpline.platform.errors import ConfigError, DataError, NotFoundError
from helpline.platform.files import read_jsonl, read_yaml_mapping, yaml_value


def _lines(path: Path, *rows: object) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_rows_skip_blank_lines_and_keep_unicode(tmp_path: Path) -> None:
    path = _lines(tmp_path / "a.jsonl", {"id": "1", "text": "café"}, "   ", {"id": "2", "text": "naïve"})
    assert [r["text"] for r in read_jsonl(path, required=("id", "text"))] == ["café", "naïve"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "1", "text": "x"}\n{"id": \n', r"a\.jsonl:2: not valid JSON"),
        (b'{"id": "1", "text": "x"}\n\n[1, 2]\n', r"a\.jsonl:3: a JSON list, not an object"),
        (b'{"id": "1", "text": "x"}\n{"id": "2", "\xc0\xff": 1}\n', r"a\.jsonl:2: not UTF-8 text"),
        (b'{"id": "1", "text": "x"}\n{"id": "2", "text": null}\n', r"a\.jsonl:2: missing 'text'"),
    ],
)
def test_jsonl_problems_name_the_line(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_jsonl(path, required=("id", "text"))


def test_a_missing_jsonl_file_is_not_found_with_the_callers_hint(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist") as err:
        read_jsonl(tmp_path / "absent.jsonl", hint="pass the doc2dial folder")
    assert err.value.hint == "pass the doc2dial folder"


def test_doc2dial_folder_drops_questions_without_their_document(tmp_path: Path) -> None:
    doc = {"doc_id": "d1", "domain": "dmv", "title": "Renew", "text": "Renew online."}
    question = {"id": "q1", "doc_id": "d1", "question": "How?", "answer_span": "online", "answer_start": 6}
    _lines(tmp_path / "docs.jsonl", doc)
    _lines(tmp_path / "qa.jsonl", question, {**question, "id": "q2", "doc_id": "gone"})
    docs, questions = read_doc2dial(tmp_path)
    assert [d["doc_id"] for d in docs] == ["d1"] and [q["id"] for q in questions] == ["q1"]
    _lines(tmp_path / "qa.jsonl", {**question, "doc_id": "gone"})
    with pytest.raises(DataError, match=r"no question's doc_id is in docs\.jsonl"):
        read_doc2dial(tmp_path)
    _lines(tmp_path / "qa.jsonl", {k: v for k, v in question.items() if k != "answer_start"})
    with pytest.raises(DataError, match=r"qa\.jsonl:1: missing 'answer_start'"):
        read_doc2dial(tmp_path)
    (tmp_path / "docs.jsonl").unlink()
    with pytest.raises(NotFoundError, match=r"lacks docs\.jsonl/qa\.jsonl"):
        read_doc2dial(tmp_path)


def test_yaml_configs_must_be_readable_mappings(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("max_steps: 3\nname: x\n")
    assert read_yaml_mapping(good, what="config", hint="h") == {"max_steps": 3, "name": "x"}
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert read_yaml_mapping(empty, what="config", hint="h") == {}
    for name, content, message in [
        ("torn.yaml", b"thresholds: [1, 2\n", "not valid YAML"),
        ("list.yaml", b"- 1\n- 2\n", "holds a list, not a mapping"),
        ("binary.yaml", b"a: \xc0\xff\n", "not UTF-8 text"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ConfigError, match=message) as err:
            read_yaml_mapping(tmp_path / name, what="gate config", hint="start from gate.yaml")
        assert str(tmp_path / name) in err.value.message and err.value.hint == "start from gate.yaml"
    with pytest.raises(NotFoundError, match=r"gate config .* does not exist"):
        read_yaml_mapping(tmp_path / "absent.yaml", what="gate config", hint="h")


def test_override_values_are_yaml_and_a_broken_one_is_named() -> None:
    assert yaml_value("max_steps", "20") == 20
    assert yaml_value("targets", "[q_proj, v_proj]") == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match=r"override targets='\[q_proj'"):
        yaml_value("targets", "[q_proj")
