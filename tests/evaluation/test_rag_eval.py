"""doc2dial question selection for the end-to-end evaluation (hand-written mini collection)."""

from __future__ import annotations

import json
from pathlib import Path

from helpline.evaluation.rag_eval import citation_precision, load_questions, score_arm
from helpline.testing import FakeEmbedder


def _dialogues(*, heldout: bool, n: int) -> list[str]:
    from helpline.datasets.doc2dial import heldout as doc2dial_heldout

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
        from helpline.guard.detector import Verdict

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
    from helpline.answering.rag import RAGPipeline
    from helpline.evaluation.rag_eval import answer_all, answer_row
    from helpline.platform.schemas import Chunk, ScoredChunk
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


class _NumberDetector:
    """Hallucinated when the answer states a number its passages do not contain."""

    def verdicts(self, queries, **_):
        import re

        from helpline.guard.detector import Verdict

        out = []
        for answer, passages, _ in queries:
            said = re.findall(r"\d+", answer)
            bad = not said or any(n not in " ".join(passages) for n in said)
            out.append(Verdict(0.9 if bad else 0.1, bad, 0.5, 0.0, []))
        return out


def test_as_served_withdraws_answers_the_detector_finds_unsupported_by_their_passages(tmp_path: Path) -> None:
    _, questions = load_questions(_folder(tmp_path), limit=3, removed=1, seed=1)
    answerable = [q for q in questions if not q.removed]
    fee = {q.id: q.gold_passage.split("fee ")[1].split()[0] for q in answerable}  # e.g. "30"
    supported, unsupported, abstained = answerable
    replies = {
        supported.id: {"text": f"It is {fee[supported.id]} dollars.", "citations": [supported.doc_id],
                       "abstained": False, "passages": [supported.gold_passage]},
        # cites the gold document, but says what no passage says: the gateway would withdraw it
        unsupported.id: {"text": "It is 990 dollars.", "citations": [unsupported.doc_id], "abstained": False,
                         "passages": [unsupported.gold_passage]},
        abstained.id: {"text": "I'm sorry, I don't know.", "citations": [], "abstained": True, "passages": []},
    }  # fmt: skip
    answers = [
        replies.get(q.id) or {"text": "It is 770 dollars.", "citations": ["dx"], "abstained": False, "passages": ["x"]}
        for q in questions
    ]
    paired: dict[str, list[float]] = {}
    scores = score_arm(questions, answers, detector=_NumberDetector(), embedder=FakeEmbedder(), paired=paired)
    assert scores["citation_correct"] == round(2 / 3, 4)  # as generated, both cited the gold document
    assert scores["abstention_rate_removed"] == 0.0
    served = scores["as_served"]
    assert served["withdrawn_rate_answerable"] == round(1 / 3, 4)
    assert served["citation_correct"] == round(1 / 3, 4)  # the withdrawn answer's citation never reaches anyone
    assert served["faithful_answer_gold"] == round(1 / 3, 4)
    assert served["unfaithful_answer_gold"] == 0.0  # nothing unsupported is served
    assert served["abstention_rate_answerable"] == round(2 / 3, 4)
    assert served["abstention_rate_removed"] == 1.0  # the invented fee for a removed document is withdrawn too
    order = [q.id for q in answerable]
    assert paired["citation_correct"] == [1.0, 1.0, 0.0] and order[0] == supported.id
    assert paired["served_citation_correct"] == [1.0, 0.0, 0.0]


def test_compare_arms_gives_paired_differences_with_bootstrap_intervals() -> None:
    from helpline.evaluation.rag_eval import compare_arms

    hybrid = [1.0] * 30 + [0.0] * 10
    paired = {
        "hybrid": {"citation_correct": hybrid},
        "retrieval": {"citation_correct": [0.0] * 30 + [0.0] * 10},  # the hybrid wins 30, loses none
        "base": {"citation_correct": list(hybrid)},  # the same answers
        "finetuned": {"citation_correct": [1.0, 0.0] * 15 + [1.0] * 10},  # wins 15, loses 10
    }
    out = compare_arms(paired)
    win = out["hybrid-retrieval"]["citation_correct"]
    assert win["difference"] == 0.75 and win["wins"] == 30 and win["losses"] == 0
    assert 0 < win["ci95"][0] < 0.75 < win["ci95"][1] <= 1.0
    assert out["hybrid-base"]["citation_correct"] == {"difference": 0.0, "ci95": [0.0, 0.0], "wins": 0, "losses": 0}
    mixed = out["hybrid-finetuned"]["citation_correct"]
    assert mixed["wins"] == 15 and mixed["losses"] == 10
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1]  # 5 questions of 40 separate nothing
    assert compare_arms({"retrieval": paired["retrieval"]}) == {}  # no hybrid arm, nothing to compare


def test_wrong_arms_counts_and_models_are_refused_before_any_question_is_answered(tmp_path: Path, monkeypatch) -> None:
    import pytest

    from helpline.evaluation import rag_eval
    from helpline.platform.context import Context
    from helpline.platform.errors import ConfigError, NotFoundError

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setattr(rag_eval, "build_index", lambda *a, **k: pytest.fail("indexed before checking the arguments"))
    (tmp_path / "d2d").mkdir()
    ctx, folder = Context.load(), _folder(tmp_path / "d2d")
    args = {"limit": 2, "removed": 1, "max_tokens": 8, "detector": None}
    with pytest.raises(ConfigError, match="unknown arm"):
        rag_eval.run_ab(ctx, folder, base="b", finetuned=None, arms=["hybird"], **args)
    with pytest.raises(ConfigError, match="no questions to ask"):
        rag_eval.run_ab(ctx, folder, base="b", finetuned=None, arms=["base"], **{**args, "limit": 0, "removed": 0})
    with pytest.raises(NotFoundError):
        rag_eval.run_ab(ctx, folder, base="no-such-model", finetuned=None, arms=["base"], **args)
