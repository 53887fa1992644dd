"""Test collections load from their documented layouts; documents rank by their best chunk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.datasets.collections import load_collection
from helpline.evaluation.retrieval import rank_documents
from helpline.platform.errors import DataError
from helpline.platform.schemas import Chunk, ScoredChunk


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_beir_layout_keeps_positive_judgements_of_the_split(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "corpus.jsonl", [{"_id": "d1", "title": "T", "text": "x"}, {"_id": "d2", "text": "y"}])
    write_jsonl(tmp_path / "queries.jsonl", [{"_id": "q1", "text": "find x"}, {"_id": "q2", "text": "unjudged"}])
    (tmp_path / "qrels").mkdir()
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq1\td2\t0\n")
    c = load_collection(f"beir:{tmp_path}")
    assert [d.doc_id for d in c.documents] == ["d1", "d2"]
    assert [(q.qid, q.text, q.relevant) for q in c.queries] == [("q1", "find x", {"d1": 1})]
    with pytest.raises(DataError, match=r"qrels/dev\.tsv"):
        load_collection(f"beir:{tmp_path}", split="dev")


def test_doc2dial_layout_keeps_the_users_earlier_turns_only(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "docs.jsonl", [{"doc_id": "dmv#1", "title": "DMV", "text": "Change address."}])
    history = [
        {"role": "user", "utterance": "I moved."},
        {"role": "agent", "utterance": "Do you have a licence?"},
        {"role": "user", "utterance": "Yes."},
    ]
    write_jsonl(tmp_path / "qa.jsonl", [{"id": "1_2", "question": "What now?", "history": history, "doc_id": "dmv#1"}])
    c = load_collection(f"doc2dial:{tmp_path}", limit=5)
    assert c.queries[0].history == ["I moved.", "Yes."] and c.queries[0].relevant == {"dmv#1": 1}


@pytest.mark.parametrize("spec", ["nope:/x", "beir:", "beir:/does/not/exist"])
def test_bad_dataset_specs_say_what_to_pass(spec: str) -> None:
    with pytest.raises(DataError):
        load_collection(spec)


def test_broken_jsonl_line_is_named(tmp_path: Path) -> None:
    (tmp_path / "docs.jsonl").write_text('{"doc_id": "a", "text": "x"}\n{broken\n')
    (tmp_path / "qa.jsonl").write_text("")
    with pytest.raises(DataError, match=r"docs\.jsonl:2"):
        load_collection(f"doc2dial:{tmp_path}")


def test_documents_rank_by_their_best_chunk() -> None:
    def hit(doc: str, n: int) -> ScoredChunk:
        return ScoredChunk(chunk=Chunk(chunk_id=f"{doc}#{n}", doc_id=doc, title="", text=""), score=1.0)

    ranked = rank_documents([hit("b", 0), hit("a", 3), hit("b", 1), hit("c", 0)])
    assert sorted(ranked, key=lambda d: -ranked[d]) == ["b", "a", "c"]
