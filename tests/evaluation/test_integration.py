"""Integration: the detector recipe end to end on a tiny hand-written HaluEval-format file, with the
real MiniLM from the workspace (a few optimiser steps, not minutes), then the CLI on that detector:
`eval hallucination`, and `eval rag` with the real SmolLM2 over a hand-written doc2dial-format folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

pytestmark = pytest.mark.integration

# Hand-written rows in HaluEval's format (not taken from the dataset).
QA = [
    (
        "Paris is the capital of France. It lies on the Seine.",
        "What is the capital of France?",
        "Paris",
        "Lyon is the capital of France.",
    ),
    (
        "The Nile flows through Egypt and Sudan.",
        "Which river flows through Egypt?",
        "The Nile",
        "The Amazon flows through Egypt since 1900.",
    ),
    (
        "Mount Kenya is in Kenya. It is 5,199 metres high.",
        "How high is Mount Kenya?",
        "5,199 metres",
        "Mount Kenya is 8,000 metres high and in Peru.",
    ),
    (
        "Ada Lovelace wrote the first published algorithm.",
        "Who wrote the first published algorithm?",
        "Ada Lovelace",
        "Charles Dickens wrote it in London.",
    ),
    (
        "Tokyo hosted the 1964 Summer Olympics.",
        "Which city hosted the 1964 Summer Olympics?",
        "Tokyo",
        "Rome hosted the 1964 Games, not Tokyo.",
    ),
    (
        "Oslo is the capital of Norway.",
        "What is the capital of Norway?",
        "Oslo",
        "Bergen became the capital of Norway in 1990.",
    ),
]
DIALOGUE = [
    (
        "Inception is directed by Christopher Nolan.",
        "[Human]: Who made Inception?",
        "Christopher Nolan directed it.",
        "Steven Spielberg directed Inception in 1985.",
    ),
    (
        "Jaws is directed by Steven Spielberg.",
        "[Human]: Do you like Jaws?",
        "Yes, Spielberg did a great job.",
        "I prefer it to Titanic, which James Cameron also made in 1975.",
    ),
] * 3


def _write(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "qa_data.jsonl", "w") as f:
        for i, (k, q, r, h) in enumerate(QA * 30):  # distinct items, so every split gets some
            row = {"knowledge": k, "question": f"{q} (#{i})", "right_answer": r, "hallucinated_answer": h}
            f.write(json.dumps(row) + "\n")
    with open(folder / "dialogue_data.jsonl", "w") as f:
        for i, (k, d, r, h) in enumerate(DIALOGUE * 10):
            f.write(
                json.dumps(
                    {"knowledge": k, "dialogue_history": f"{d} ({i})", "right_response": r, "hallucinated_response": h}
                )
                + "\n"
            )
    return folder


_TRAINED: dict[str, Any] = {}  # the one detector this module's tests share


@pytest.fixture
def trained(in_workspace: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """`eval train-detector` on the hand-written files, run once for the module (the detector stays in the
    session's workspace as `test-detector`): its report and the HaluEval-format folder."""
    if not _TRAINED:
        from helpline.cli.app import app

        data = _write(tmp_path_factory.mktemp("halueval"))
        result = CliRunner().invoke(
            app,
            ["eval", "train-detector", f"halueval_dir={data}", "qa_items=8", "dialogue_items=8", "val_items=40",
             "doc2dial_pairs=0", "max_minutes=0.5", "output_name=test-detector", "device=cpu", "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        _TRAINED.update(report=json.loads(result.stdout), data=data)
    return _TRAINED["report"], _TRAINED["data"]


def test_train_detector_then_evaluate_with_the_cli(trained: tuple[dict[str, Any], Path]) -> None:
    from helpline.cli.app import app

    report, data = trained
    runner = CliRunner()
    assert report["cross_encoder"]["steps_done"] >= 1 and report["cross_encoder"]["device"] == "cpu"
    assert report["cross_encoder_precision"] in ("bf16", "int8")  # what the heads were fitted on
    folder = Path(report["path"])
    assert (folder / "cross_encoder" / "config.json").exists() and (folder / "detector.json").exists()

    result = runner.invoke(
        app,
        [
            "eval",
            "hallucination",
            "--dataset",
            f"halueval-qa:{data / 'qa_data.jsonl'}",
            "--detector",
            "test-detector",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    # Hand-written hallucinations add names and numbers the knowledge lacks: the support features see them.
    assert metrics["n"] == len(QA) * 30
    assert metrics["balanced_accuracy"] > 0.9

    from helpline.guard.detector import Detector

    detector = Detector.load(folder)
    grounded = detector.verdict("Paris is the capital.", ["Paris is the capital of France."])
    invented = detector.verdict(
        "Paris is the capital. It has 90 million residents and Elon Musk as mayor.", ["Paris is the capital of France."]
    )
    assert invented.score > grounded.score
    assert max(invented.sentences, key=lambda s: s.score).sentence.startswith("It has 90 million")


def _doc2dial(folder: Path) -> Path:
    """Three hand-written help articles and one held-out question on each, in doc2dial's format."""
    from helpline.datasets.doc2dial import heldout as doc2dial_heldout

    folder.mkdir(parents=True, exist_ok=True)
    docs = [
        ("renew", "Renewing a licence", "You can renew your driving licence online up to 90 days before it expires."),
        ("lost", "Replacing a lost card", "If your card is lost, report it and order a replacement for 15 dollars."),
        ("move", "Changing your address", "Tell us your new address within 10 days of moving, online or by mail."),
    ]
    questions = ["When can I renew my licence online?", "How much is a new card if I lost mine?",
                 "How soon must I report a new address?"]  # fmt: skip
    dialogues = [d for d in (f"dial{i}" for i in range(1000)) if doc2dial_heldout(d)][: len(docs)]
    with open(folder / "docs.jsonl", "w") as f:
        for doc_id, title, text in docs:
            f.write(json.dumps({"doc_id": doc_id, "title": title, "text": text, "domain": "dmv"}) + "\n")
    with open(folder / "qa.jsonl", "w") as f:
        for dial, (doc_id, _, text), question in zip(dialogues, docs, questions):
            row = {"id": f"{dial}_1", "dial_id": dial, "doc_id": doc_id, "question": question, "history": [],
                   "answer_span": text[:40], "answer_start": 0, "agent_response": text}  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return folder


def test_rag_ab_report_with_the_real_model_and_a_trained_detector(
    trained: tuple[dict[str, Any], Path], tmp_path: Path
) -> None:
    from helpline.cli.app import app

    runner = CliRunner()
    detector = "test-detector"
    folder = _doc2dial(tmp_path / "doc2dial")
    # The base model stands in for the adapter: the hybrid arm answers exactly as retrieval-only does.
    result = runner.invoke(
        app,
        ["eval", "rag", "--dataset", str(folder), "--finetuned", "smollm2-135m-instruct", "--arms",
         "base,retrieval,hybrid", "--limit", "2", "--removed", "1", "--max-tokens", "16", "--detector", detector,
         "--answers", str(tmp_path / "answers.jsonl"), "--json"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout[result.stdout.index("{") :])
    assert report["questions"] == 3
    retrieval, hybrid = report["arms"]["retrieval"], report["arms"]["hybrid"]
    assert retrieval["n_answerable"] == 2 and retrieval["n_unanswerable"] == 1
    served = hybrid["as_served"]
    assert 0 <= served["citation_correct"] <= hybrid["citation_correct"]  # withdrawing never adds a citation
    assert served["abstention_rate_answerable"] >= hybrid["abstention_rate_answerable"]
    same = report["comparisons"]["hybrid-retrieval"]
    assert {"faithful_gold", "citation_correct", "served_citation_correct"} <= set(same)
    assert all(c["difference"] == 0 and c["wins"] == c["losses"] == 0 for c in same.values())  # greedy, same model
    rows = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["arm"] for r in rows} == {"base", "retrieval", "hybrid"}
