"""Does the model in production now answer each staff correction right? (#26: the Review page shows it.)

Every corrected turn in the gateway's database (its latest feedback carries a staff correction) is asked again as
served: an `eval answers` case through the gateway's code path (retrieval for the role that asked, the support
prompt, generation, the one answer decision), with the customer's earlier messages. It is *fixed* when the served
answer contains a phrase of the correction: a fact it states that neither the question nor the answer it replaced
states (``training/loop/heldout.expect_phrases``, the rule the improve loop's held-out corrections are scored by).
A correction with no such phrase ("Please contact us.") cannot be checked, and says so (``fixed`` None).

Given ``backing`` (the passages retrieved for the question now, judged by ``staff_answers.backs``), a check also says
whether the help centre still backs the correction: while it does, the gateway serves it again to questions asked
alike; once an article changes, it is retired, and staff see that on the Review page.

Each check is recorded on the turn (``GatewayStore.record_check``), so the review queue shows the latest one, and a
correction saved again after its check shows that check as stale.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from helpline.evaluation.answer_paths import Answerer
from helpline.evaluation.answers import AnswerCase, judge
from helpline.serving.gateway.conversations import trusted_history
from helpline.serving.gateway.store import GatewayStore
from helpline.training.loop.heldout import expect_phrases


@dataclass
class CorrectionCheck:
    """One corrected turn asked again."""

    response_id: str
    question: str
    role: Literal["customer", "staff"]
    expect: list[str]
    fixed: bool | None  # None: no phrase of the correction can be checked
    outcome: str = ""  # answered | fallback | handoff ("" when not asked)
    served: str = ""
    backed: bool | None = None  # does the help centre still back the correction (None: not asked)


#: Whether the passages retrieved now for a case's question back a correction (served again as a staff answer).
Backing = Callable[[AnswerCase, str], bool]


def correction_case(turn: dict[str, Any]) -> tuple[AnswerCase | None, list[str]]:
    """The answer-set case a corrected ``turn`` asks again (None when nothing of it can be checked), and the
    phrases a right answer contains."""
    history = [m["content"] for m in trusted_history(turn) if m["role"] == "user"]
    correction = (turn.get("correction") or "").strip()
    if not history or not correction:
        return None, []
    replaced = (turn.get("withdrawn") or turn.get("answer") or "").strip() or None
    expect = expect_phrases(correction, question=history[-1], rejected=replaced)
    if not expect:
        return None, []
    doc_ids = [p["doc_id"] for p in turn.get("passages") or [] if p.get("doc_id")]
    case = AnswerCase(
        id=turn["response_id"],
        question=history[-1],
        doc_id=doc_ids[0] if doc_ids else "(staff correction)",
        expect=expect,
        role="customer" if turn["role"] == "customer" else "staff",
        history=history[:-1],
    )
    return case, expect


def check_corrections(
    store: GatewayStore, answer: Answerer, *, model: str, limit: int = 2000, record: bool = True,
    backing: Backing | None = None,
) -> tuple[dict[str, Any], list[CorrectionCheck]]:  # fmt: skip
    """Ask every corrected turn again with ``answer`` (the gateway's code path for ``model``), newest first, up to
    ``limit``, and with ``backing`` whether the help centre still backs its correction; record each check unless
    ``record`` is False. Returns the summary and the checks."""
    checks: list[CorrectionCheck] = []
    for turn in store.review_items("reviewed", limit=limit):
        case, expect = correction_case(turn)
        role: Literal["customer", "staff"] = "customer" if turn["role"] == "customer" else "staff"
        question = next((m["content"] for m in reversed(turn["messages"]) if m["role"] == "user"), "")
        if case is None:
            check = CorrectionCheck(turn["response_id"], question, role, [], None)
        else:
            judged = judge(case, answer(case))
            backed = None if backing is None else backing(case, turn["correction"])
            check = CorrectionCheck(turn["response_id"], question, role, expect, judged.correct, judged.outcome,
                                    judged.text, backed)  # fmt: skip
        if record:
            store.record_check(check.response_id, model=model, fixed=check.fixed, outcome=check.outcome,
                               served=check.served, expect=check.expect, backed=check.backed)  # fmt: skip
        checks.append(check)
    return summary(checks, model=model), checks


def summary(checks: list[CorrectionCheck], *, model: str) -> dict[str, Any]:
    """Counts over the checks: fixed, not fixed, not checkable, and the outcomes of the ones asked."""
    asked = [c for c in checks if c.fixed is not None]
    fixed = sum(bool(c.fixed) for c in asked)
    return {
        "model": model,
        "corrections": len(checks),
        "checked": len(asked),
        "fixed": fixed,
        "not_fixed": len(asked) - fixed,
        "not_checkable": len(checks) - len(asked),
        "fixed_rate": round(fixed / len(asked), 4) if asked else None,
        "outcomes": dict(Counter(c.outcome for c in asked)),
        "retired": sum(c.backed is False for c in checks),  # no longer backed: not served again as staff answers
        "checks": [asdict(c) for c in checks],
    }
