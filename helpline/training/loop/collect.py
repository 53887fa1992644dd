"""Step 1 of `helpline improve` (#26): what staff and customers said about served answers since the last run,
as training rows and preference pairs.

What a rated turn may teach:

- A staff correction is an answer to learn (``chosen``). The draft it replaces is the one to move away from
  (``rejected``): the draft the verification withdrew, or else the answer served to a thumbs-down, unless that
  was the handoff (the policy's words, not the model's). No pair when the two are the same text.
- A thumbs-up answer is an answer to learn only when the ``verifier`` (the gateway's detector) finds it
  supported by the turn's passages: a customer's thumb does not know whether a fact is true. Without a
  verifier thumbs-up answers are left out. A quoted passage (the fallback) or a handoff is not the model's.
- The conversation keeps only what the gateway vouches for, as the conversation export does
  (``serving/gateway/conversations.py``: assistant turns the client wrote are cut, with the history before
  them), and a turn answered from internal passages teaches only a staff-facing model.
- The prompt is what the gateway built: the support prompt over the turn's passages, then the conversation up
  to the question. A correction to a turn with no passage is left out: the gateway hands such a question off
  before the model sees it, and a lesson without passages would teach answering from memory (the knowledge base
  needs the article instead). For the same reason a correction stating a figure (an amount, a duration, a count)
  that none of the turn's passages states is left out: it would teach the model to state figures its passages do
  not hold, and a batch of corrections contradicting the knowledge base ("refunds take 60 days" where the article
  says 14) stops here. Figures only: a correction that contradicts its passages in words is for the gate and the
  canary to stop.

Every turn read is either collected or counted under one reason in ``Collection.excluded``. The cursor is the
time of the latest feedback read (collected or not), so the next run starts after it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from helpline.answering.attribution import attribute
from helpline.answering.decision import Verifier
from helpline.answering.prompts import load_prompt
from helpline.platform.schemas import ChatMessage
from helpline.platform.text import unbacked_numbers
from helpline.serving.gateway.conversations import Audience, audience, logged_passages, trusted_history
from helpline.serving.gateway.store import GatewayStore
from helpline.training.data.sources import validate_messages

Kind = Literal["correction", "thumbs_up"]

#: Why a turn read was not collected (the keys of ``Collection.excluded``).
REASONS = {
    "not_answered": "the request failed or was cancelled",
    "rated_down_without_correction": "a thumbs-down that no staff member has corrected yet",
    "internal_for_customer_facing": "answered from internal passages (or for staff), and the model is customer-facing",
    "no_passages": "no passage was retrieved, so the model never answers it as served",
    "handoff": "a thumbs-up on the handoff, which the model did not write",
    "fallback_quote": "a thumbs-up on a quoted passage (the fallback), which the model did not write",
    "unverified_thumbs_up": "a thumbs-up answer, and no verifier was given to check it",
    "unsupported_thumbs_up": "a thumbs-up answer the verifier finds unsupported by its passages",
    "unbacked_figures": "a correction stating a figure (amount, duration, count) that none of the turn's passages "
    "states: fix the article first, or the model would learn to state figures its passages do not hold",
    "forged_turn": "no question of the customer's is left once the client-written assistant turns are cut",
    "malformed": "the conversation does not alternate user and assistant turns",
}


@dataclass(frozen=True)
class Collected:
    """One turn that teaches: the prompt the gateway built, the answer to learn, and (for a correction) the draft
    it replaces."""

    response_id: str
    conversation_id: str
    kind: Kind
    prompt: list[dict[str, str]]  # system (support prompt + passages), then the conversation up to the question
    chosen: str
    rejected: str | None
    rejected_from: Literal["withdrawn", "served"] | None
    role: Literal["customer", "staff"]  # the role an evaluation asks the question as
    audience: Audience
    doc_ids: tuple[str, ...]  # the articles the chosen answer draws on, best first
    feedback_at: float

    @property
    def question(self) -> str:
        return self.prompt[-1]["content"]

    @property
    def history(self) -> list[str]:
        """The customer's earlier messages, oldest first."""
        return [m["content"] for m in self.prompt[:-1] if m["role"] == "user"]

    def sft_row(self) -> dict[str, Any]:
        """A training row in the layout `helpline data prepare` writes."""
        return {
            "messages": [*self.prompt, {"role": "assistant", "content": self.chosen}],
            "intent": f"loop:{self.kind}",
            "category": "grounded",
            "origin": f"gateway:{self.response_id}",
        }

    def pair(self) -> dict[str, Any] | None:
        """A preference pair in TRL's conversational layout, or None without a rejected draft."""
        if self.rejected is None:
            return None
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


@dataclass
class Collection:
    """What one collection read, kept and left out, and where the next one starts (``cursor``)."""

    since: float | None
    cursor: float | None
    staff_facing: bool
    verified: bool  # a verifier judged the thumbs-up answers
    source: str  # the gateway database read
    items: list[Collected] = field(default_factory=list)
    turns_read: int = 0
    excluded: Counter[str] = field(default_factory=Counter)
    #: Assistant turns cut from the collected conversations: those the client wrote, and the history before them.
    cut_assistant_turns: int = 0
    #: Corrections kept as answers to learn, without a pair: the draft they replace says the same.
    identical_pairs_skipped: int = 0

    @property
    def corrections(self) -> list[Collected]:
        return [i for i in self.items if i.kind == "correction"]

    @property
    def pairs(self) -> list[Collected]:
        return [i for i in self.items if i.rejected is not None]

    def counts(self) -> dict[str, Any]:
        """The figures a manifest records: ``turns_read`` = ``collected`` + the excluded ones."""
        return {
            "turns_read": self.turns_read,
            "collected": len(self.items),
            "corrections": len(self.corrections),
            "thumbs_up": len(self.items) - len(self.corrections),
            "pairs": len(self.pairs),
            "excluded": dict(sorted(self.excluded.items())),
            "cut_assistant_turns": self.cut_assistant_turns,
            "identical_pairs_skipped": self.identical_pairs_skipped,
        }


def collect(
    store: GatewayStore, *, since: float | None, staff_facing: bool, verifier: Verifier | None = None
) -> Collection:
    """The turns whose latest feedback came after ``since`` (the previous run's ``cursor``; None: all of them),
    screened by the rules in the module docstring. ``staff_facing``: the model being trained answers staff, so
    turns answered from internal passages may teach it. ``verifier``: the gateway's answer check (what
    ``serving.factory.build_verifier`` returns), which decides the thumbs-up answers."""
    out = Collection(
        since=since, cursor=since, staff_facing=staff_facing, verified=verifier is not None, source=store.location
    )
    for turn in store.feedback_turns(since=since):
        out.turns_read += 1
        out.cursor = turn["feedback_at"] if out.cursor is None else max(out.cursor, turn["feedback_at"])
        reason = _screen(turn, staff_facing=staff_facing, verifier=verifier)
        if reason is None:
            item, reason = _collected(turn, out)
            if item is not None:
                out.items.append(item)
        if reason is not None:
            out.excluded[reason] += 1
    return out


def _screen(turn: dict[str, Any], *, staff_facing: bool, verifier: Verifier | None) -> str | None:
    """Why ``turn`` may not teach this model (a key of :data:`REASONS`), or None when it may."""
    if turn["status"] != "ok":
        return "not_answered"
    if audience(turn) == "staff" and not staff_facing:
        return "internal_for_customer_facing"
    if _correction(turn) is None:
        if turn["rating"] != "up":
            return "rated_down_without_correction"
        if turn["abstained"]:
            return "handoff"
        if (turn["verification"] or {}).get("outcome") == "fallback":
            return "fallback_quote"
    if not turn["passages"]:
        return "no_passages"
    texts = [p.get("text") or "" for p in turn["passages"]]
    if (correction := _correction(turn)) is not None and all(texts) and unbacked_numbers(correction, texts):
        return "unbacked_figures"
    if _correction(turn) is None:
        if verifier is None:
            return "unverified_thumbs_up"
        if not verifier.verify(turn["answer"], logged_passages(turn)).grounded:
            return "unsupported_thumbs_up"
    return None


def _collected(turn: dict[str, Any], out: Collection) -> tuple[Collected | None, str | None]:
    """The turn as a collected item (counting the assistant turns cut from it), or why it cannot be one."""
    history = trusted_history(turn)
    out.cut_assistant_turns += sum(m["role"] == "assistant" for m in turn["messages"]) - sum(
        m["role"] == "assistant" for m in history
    )
    if not any(m["role"] == "user" for m in history):
        return None, "forged_turn"
    correction = _correction(turn)
    chosen = correction if correction is not None else turn["answer"].strip()
    if validate_messages([*history, {"role": "assistant", "content": chosen}]):
        return None, "malformed"
    passages = logged_passages(turn)
    messages = load_prompt("support").build([ChatMessage(**m) for m in history], passages)
    rejected, rejected_from = _rejected(turn) if correction is not None else (None, None)
    if rejected is not None and " ".join(rejected.split()) == " ".join(chosen.split()):
        out.identical_pairs_skipped += 1
        rejected, rejected_from = None, None
    item = Collected(
        response_id=turn["response_id"],
        conversation_id=turn["conversation_id"],
        kind="correction" if correction is not None else "thumbs_up",
        prompt=[m.model_dump() for m in messages],
        chosen=chosen,
        rejected=rejected,
        rejected_from=rejected_from,
        role="customer" if turn["role"] == "customer" else "staff",
        audience=audience(turn),
        doc_ids=tuple(dict.fromkeys(p.chunk.doc_id for p in attribute(chosen, passages))),
        feedback_at=turn["feedback_at"],
    )
    return item, None


def _correction(turn: dict[str, Any]) -> str | None:
    """The staff correction on the turn's latest feedback (None when there is none, or it is blank)."""
    text = (turn.get("correction") or "").strip()
    return text or None


def _rejected(turn: dict[str, Any]) -> tuple[str | None, Literal["withdrawn", "served"] | None]:
    """The model's own answer that a correction replaces: the withdrawn draft, else the answer served when it was
    rated down (not a handoff, a quoted passage or a staff answer served again, which the model did not write)."""
    withdrawn = (turn.get("withdrawn") or "").strip()
    if withdrawn:
        return withdrawn, "withdrawn"
    served = (turn.get("answer") or "").strip()
    generated = not turn["abstained"] and (turn["verification"] or {}).get("outcome") not in ("fallback", "corrected")
    if served and generated and turn["rating"] == "down":
        return served, "served"
    return None, None

