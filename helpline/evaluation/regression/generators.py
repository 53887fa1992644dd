"""Cases built at run time from the shared datasets (their rows never enter the repository).

``bitext``: a customer request of each intent; the agent reply is the reference, and the answer
must be polite, not empty, and free of template placeholders. ``doc2dial``: a grounded question
with its gold document given as context; the human agent's reply is the reference and the answer
must not abstain.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from helpline.datasets.bitext import BitextRow, read_bitext
from helpline.datasets.doc2dial import heldout, history_turns, read_doc2dial
from helpline.evaluation.regression.cases import (
    Case,
    ContextDoc,
    Expectations,
    GeneratorSpec,
    Structure,
    Suite,
    Tone,
    Turn,
)
from helpline.platform.errors import NotFoundError

_PLACEHOLDER = re.compile(r"\{\{[^}]*\}\}")


def generate_cases(spec: GeneratorSpec, *, data_dir: Path) -> list[Case]:
    """The cases one generator spec asks for; relative paths resolve against ``data_dir``."""
    path = Path(spec.path)
    if not path.is_absolute():
        path = data_dir / path
    if not path.exists():
        raise NotFoundError(
            f"generator data {path} does not exist",
            hint="pass --data-dir pointing at the shared data folder (e.g. ../shared/data)",
        )
    if spec.source == "bitext":
        return bitext_cases(path, n=spec.n, seed=spec.seed)
    return doc2dial_cases(path, n=spec.n, seed=spec.seed)


def bitext_cases(path: Path, *, n: int, seed: int = 0) -> list[Case]:
    """Up to ``n`` requests spread over intents (round-robin), seeded; rows with an empty column are skipped."""
    rows, _ = read_bitext(path)
    rng = random.Random(seed)
    by_intent: dict[str, list[BitextRow]] = {}
    for row in rows:
        by_intent.setdefault(row.intent, []).append(row)
    for group in by_intent.values():
        rng.shuffle(group)
    picked: list[BitextRow] = []
    while len(picked) < n and any(by_intent.values()):
        for intent in sorted(by_intent):
            if by_intent[intent] and len(picked) < n:
                picked.append(by_intent[intent].pop())
    cases = []
    for i, row in enumerate(picked):
        reference = _PLACEHOLDER.sub("", row.response)
        cases.append(
            Case(
                id=f"bitext-{row.intent}-{i}",
                category=f"bitext:{row.category.lower()}",
                question=row.instruction,
                expect=Expectations(
                    must_not_contain=["{{", "}}"],
                    structure=Structure(min_words=5, max_words=250),
                    tone=Tone(),
                    reference=reference,
                    min_rouge_l=0.1,
                    min_similarity=0.35,
                ),
                tags=["generated", "bitext"],
            )
        )
    return cases


def doc2dial_cases(folder: Path, *, n: int, seed: int = 0, window: int = 900) -> list[Case]:
    """``n`` seeded questions with the gold document (around the answer span) as context."""
    doc_rows, questions = read_doc2dial(folder)
    docs = {d["doc_id"]: d for d in doc_rows}
    # Only dialogues kept out of training data (`data prepare --source doc2dial:` skips them).
    rows = [r for r in questions if heldout(r.get("dial_id", r["id"]))]
    rng = random.Random(seed)
    rng.shuffle(rows)
    cases = []
    for row in rows[:n]:
        doc = docs[row["doc_id"]]
        start = max(0, int(row["answer_start"]) - window // 3)
        history = [Turn(role=role, content=text) for role, text in history_turns(row, last=4)]
        cases.append(
            Case(
                id=f"doc2dial-{row['id']}",
                category=f"doc2dial:{doc['domain']}",
                question=row["question"],
                history=history,
                context=[
                    ContextDoc(doc_id=row["doc_id"], title=doc["title"], text=doc["text"][start : start + window])
                ],
                expect=Expectations(
                    must_abstain=False,
                    must_cite=[row["doc_id"]],
                    reference=row.get("agent_response") or None,
                    min_rouge_l=0.1,
                    min_similarity=0.4,
                ),
                tags=["generated", "doc2dial"],
            )
        )
    return cases


def suite_cases(suite: Suite, *, data_dir: Path, limit: int = 0) -> list[Case]:
    """The suite's written cases followed by its generated ones (at most ``limit`` if set)."""
    cases = list(suite.cases)
    for spec in suite.generate:
        cases += generate_cases(spec, data_dir=data_dir)
    return cases[:limit] if limit else cases
