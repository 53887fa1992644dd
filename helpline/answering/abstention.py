"""The abstention threshold: below this best-passage score the assistant says it does not know.

Score scales differ by search mode (cosine for dense, BM25 units, fused scores for hybrid), so
the threshold is kept per mode. Precedence: ``retrieval.min_score`` when set explicitly, then a
calibration written by ``helpline bench serving --abstention`` to ``reports/abstention.json``,
then the built-in defaults below.

Calibration: questions from doc2dial asked with their gold document in the index ("answerable")
and with it removed ("unanswerable": the gold document's chunks are dropped from the results,
which equals removing it from a dense index, and approximates it for BM25/hybrid whose scores
depend a little on the rest of the collection).
"""

from __future__ import annotations

import json
import random
import re
import tempfile
from pathlib import Path
from typing import Any

from helpline.datasets.doc2dial import read_doc2dial, user_history
from helpline.platform.schemas import Document
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval.embedders.base import Embedder
from helpline.retrieval.factory import scratch_knowledge_base

#: Dense (MiniLM cosine): the threshold that still answers 95% of answerable doc2dial questions
#: (`helpline bench serving --abstention --data ../shared/data/doc2dial`, 300 questions: 0.327 →
#: answers 95%, abstains on 6% of unanswerable ones; AUC 0.59, because doc2dial's other sections of
#: the same page stay in the index). Favouring answers: on the sample KB, off-topic questions score
#: below 0.2. bm25 has no calibration yet (0 = never abstain on score).
DEFAULT_MIN_SCORE: dict[str, float] = {"dense": 0.33, "bm25": 0.0}

REPORT_NAME = "abstention.json"

#: Phrases that mean "I don't know / let me hand you over". Evaluation counts an answer with any of
#: them anywhere as an abstention; serving reads only the answer's first sentence (:func:`declines`).
ABSTAIN_PATTERNS = (
    r"\bI (?:don't|do not|cannot|can't) (?:know|find|say|answer|help with)",
    r"\bI'?m (?:not sure|unable to|sorry,? (?:but )?I (?:don't|do not|cannot))",
    r"\b(?:no|not any) information (?:about|on)\b",
    r"\bconnect you with (?:a|one of our|our)\b",
    r"\bnot (?:in|covered by) (?:our|the) (?:help|knowledge|passages|documents)",
)
_FIRST_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n")
_DECLINES = re.compile("|".join(ABSTAIN_PATTERNS), re.IGNORECASE)


def declines(answer: str) -> bool:
    """Does the generated answer open by saying it does not know? Then it claims nothing to check or
    cite, and the customer gets the handoff instead. Only the first sentence counts: an answer that
    ends with "I can connect you with a person if you need more" has still answered."""
    first = _FIRST_SENTENCE.split(answer.strip(), maxsplit=1)[0]
    return _DECLINES.search(first) is not None


def scoring_mode(mode: str) -> str:
    """Which scores the abstention decision reads: hybrid fuses by rank (its top score is about the
    same for every question), so hybrid abstains on the dense similarity of the best passage."""
    return "dense" if mode == "hybrid" else mode


def min_score_for(settings: Settings, workspace: Workspace) -> float:
    """The threshold for the configured search mode (explicit setting > calibration > default)."""
    r = settings.retrieval
    mode = scoring_mode(r.mode)
    if "min_score" in r.model_fields_set:
        return r.min_score
    report = workspace.reports / REPORT_NAME
    if report.is_file():
        calibrated = json.loads(report.read_text()).get("thresholds", {})
        if mode in calibrated:
            return float(calibrated[mode])
    return DEFAULT_MIN_SCORE.get(mode, 0.0)


def _questions(rows: list[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    rows = [r for r in rows if str(r["question"]).strip()]
    random.Random(seed).shuffle(rows)
    return rows[:n]


def _query(row: dict[str, Any]) -> str:
    previous = user_history(row)[-1:]
    return "\n".join([*previous, row["question"]])


def score_pairs(search: Any, rows: list[dict[str, Any]], *, k: int) -> list[tuple[float, float]]:
    """(best score with the gold document, best score without it) per question."""
    pairs = []
    for row in rows:
        hits = search(_query(row), k=k + 40, role="staff")
        with_gold = hits[0].score if hits else float("-inf")
        others = [h.score for h in hits if h.chunk.doc_id != row["doc_id"]]
        pairs.append((with_gold, others[0] if others else float("-inf")))
    return pairs


def tradeoff(pairs: list[tuple[float, float]]) -> dict[str, Any]:
    """Answer rate on answerable vs abstain rate on unanswerable questions, per threshold."""
    pos = sorted(p for p, _ in pairs)
    neg = sorted(q for _, q in pairs)
    candidates = sorted(s for s in set(pos) | set(neg) if s != float("-inf"))  # -inf: no passage at all
    table = []
    for t in candidates:
        answered = sum(s >= t for s in pos) / len(pos)
        abstained = sum(s < t for s in neg) / len(neg)
        table.append({"threshold": round(t, 4), "answer_rate": round(answered, 4), "abstain_rate": round(abstained, 4)})
    best = max(table, key=lambda r: r["answer_rate"] + r["abstain_rate"])
    at_95 = max((r for r in table if r["answer_rate"] >= 0.95), key=lambda r: r["threshold"], default=None)
    auc = sum(p > q for p in pos for q in neg) / (len(pos) * len(neg))
    grid = [table[int(i * (len(table) - 1) / 10)] for i in range(11)]
    return {"best_balanced": best, "answer_rate_95": at_95, "auc": round(auc, 4), "grid": grid}


def calibrate(data_dir: Path, *, settings: Settings, embedder: Embedder, n: int = 300, seed: int = 0) -> dict[str, Any]:
    """Index doc2dial in a throwaway knowledge base (the configured chunking and search mode, the given
    embedder) and measure the with/without-document score distributions."""
    docs, questions = read_doc2dial(data_dir, qa_fields=("id", "doc_id", "question"))
    rows = _questions(questions, n, seed)
    with tempfile.TemporaryDirectory() as tmp:
        kb = scratch_knowledge_base(tmp, embedder, settings=settings, name="abstention")
        kb.sync(
            Document(doc_id=d["doc_id"], title=d.get("title", ""), text=d["text"], metadata={"domain": d["domain"]})
            for d in docs
        )
        mode = scoring_mode(settings.retrieval.mode)
        pairs = score_pairs(
            lambda q, k, role: kb.search(q, k=k, role=role, mode=mode), rows, k=settings.retrieval.top_k
        )
    result = tradeoff(pairs)
    return {"mode": mode, "questions": len(rows), "documents": len(docs), **result}
