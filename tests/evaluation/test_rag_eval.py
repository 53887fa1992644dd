"""doc2dial question selection for the end-to-end evaluation (hand-written mini collection)."""

from __future__ import annotations

import json
from pathlib import Path

from helpline.evaluation.rag_eval import citation_precision, load_questions, score_arm
from helpline.testing import FakeEmbedder


def _dialogues(*, heldout: bool, n: int) -> list[str]:
    from helpline.retrieval.datasets import doc2dial_heldout

    ids = (f"dial{i}" for i in range(10_000))
    return [d for d in ids if doc2dial_heldout(d) == heldout][:n]


def _folder(tmp_path: Path) -> Path:
    docs = [
        {"doc_id": f"d{i}", "domain": "dmv", "title": f"Doc {i}", "text": f"Document {i} says fee {i}0 dollars."}
        for i in range(6)
    ]
    qa = []
    for i, dial in enumerate(_dialogues(heldout=True, n=12) + _dialogues(heldout=False, n=4)):
        d = i % 6
        qa.append(
            {"id": f"{dial}_1", "dial_id": dial, "doc_id": f"d{d}", "question": f"What is fee {d}?", "history": [],
             "answer_span": f"fee {d}0 dollars", "answer_start": 16, "agent_response": f"It is {d}0 dollars."}
        )  # fmt: skip
    (tmp_path / "docs.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(q) for q in qa))
    return tmp_path


def test_removed_questions_lose_their_gold_document(tmp_path: Path) -> None:
    documents, questions = load_questions(_folder(tmp_path), limit=4, removed=2, seed=1)
    indexed = {d.doc_id for d in documents}
    removed = [q for q in questions if q.removed]
    answerable = [q for q in questions if not q.removed]
    assert len(removed) == 2 and len(answerable) == 4
    assert all(q.doc_id not in indexed for q in removed)
    assert all(q.doc_id in indexed for q in answerable)
    assert all("dollars" in q.gold_passage for q in questions)


def test_only_dialogues_held_out_of_training_are_asked(tmp_path: Path) -> None:
    _, questions = load_questions(_folder(tmp_path), limit=100, removed=0, seed=0)
    assert len(questions) == 12  # the 4 training-side dialogues are never picked
    assert {q.id.split("_")[0] for q in questions} == set(_dialogues(heldout=True, n=12))


class _Detector:
    def verdicts(self, queries, **_):
        from helpline.evaluation.hallucination.detector import Verdict

        return [Verdict(0.9 if "100" in a else 0.1, "100" in a, 0.5, 0.0, []) for a, _, _ in queries]


def test_score_arm_counts_citations_abstentions_and_faithfulness(tmp_path: Path) -> None:
    _, questions = load_questions(_folder(tmp_path), limit=2, removed=1, seed=1)
    answers = []
    for q in questions:
        if q.removed:
            answers.append({"text": "I'm sorry, I don't know.", "citations": [], "abstained": True, "passages": []})
        else:
            answers.append(
                {"text": "It is 100 dollars.", "citations": [q.doc_id], "abstained": False, "passages": ["x"]}
            )
    scores = score_arm(questions, answers, detector=_Detector(), embedder=FakeEmbedder())
    assert scores["citation_correct"] == 1.0
    assert scores["citation_precision"] == 1.0
    assert scores["abstention_rate_removed"] == 1.0
    assert scores["abstention_rate_answerable"] == 0.0
    assert scores["faithful_rate_gold"] == 0.0  # "100 dollars" is not what the gold passage says


def test_citation_precision_is_the_gold_documents_share_of_the_cited_ones() -> None:
    assert citation_precision(["gold", "gold", "other"], "gold") == 0.5  # distinct documents
    assert citation_precision(["other"], "gold") == 0.0
    assert citation_precision([], "gold") == 0.0
    assert citation_precision(["gold"], "gold") == 1.0


def test_every_answer_is_recorded_with_its_gold_document_citations_and_retrieval(tmp_path: Path) -> None:
    from helpline.evaluation.rag_eval import answer_all, answer_row
    from helpline.platform.schemas import Chunk, ScoredChunk
    from helpline.serving.rag import RAGPipeline
    from helpline.testing import FakeGenerator

    _, questions = load_questions(_folder(tmp_path), limit=2, removed=0, seed=1)
    passages = [
        ScoredChunk(chunk=Chunk(chunk_id=f"{d}#0", doc_id=d, title=d, text=f"Document {d} says fee {n}0 dollars."),
                    score=1.0 - n / 10)
        for n, d in ((3, "d3"), (5, "d5"))
    ]  # fmt: skip
    pipeline = RAGPipeline(search=lambda *_, **__: passages, generator=FakeGenerator(reply="The fee is 50 dollars."))
    answers = answer_all("rag", questions, generator=None, pipeline=pipeline, max_tokens=32)
    rows = [answer_row("hybrid", q, a) for q, a in zip(questions, answers)]
    assert [r["id"] for r in rows] == [q.id for q in questions]
    row = rows[0]
    assert row["arm"] == "hybrid" and row["gold"] == questions[0].doc_id and row["gold_removed"] is False
    assert row["retrieved"] == ["d3", "d5"]  # retrieval's order
    assert row["citations"] == ["d5"]  # only the passage the answer draws on
    assert row["answer"] == "The fee is 50 dollars." and row["question"] == questions[0].conversation[-1].content
