"""The canary's two arms, counted from the gateway's log: what production and the canary served since the canary
started (``serving/canary.py`` decides from these counts).

A turn belongs to an arm by the model that answered it (its adapter, else the served model), and counts only when
it was asked of the public production id (``helpline-support``): that is the traffic the canary share splits; a
request that names the canary or a model directly is someone testing it, not a customer drawn at random. Per arm:
answers (turns answered), thumbs-down (the latest rating), handoffs, answers withdrawn by verification, latency, and,
with a verifier (the gateway's detector), the served answers it judged against their logged passages: sampled, and
of those the wrong-served (not supported). Verdicts are kept by response id, so a turn is judged once per process.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Protocol

from helpline.answering.decision import Verifier
from helpline.serving.canary import ArmCounts
from helpline.serving.gateway.conversations import logged_passages
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import PUBLIC_ALIASES

#: The ids a request names to be split between production and the canary.
SPLIT_IDS = frozenset({*(pub for pub, alias in PUBLIC_ALIASES.items() if alias == "production"), "production"})


class ArmSource(Protocol):
    """Where the canary's counts come from."""

    def counts(self, *, production: str, canary: str, since: float) -> tuple[ArmCounts, ArmCounts]:
        """Production's and the canary's counts over the turns logged since ``since``."""
        ...


@dataclass
class _Tally:
    answers: int = 0
    thumbs_down: int = 0
    handoffs: int = 0
    withdrawals: int = 0
    sampled: int = 0
    wrong_served: int = 0
    latencies_s: list[float] = field(default_factory=list)

    def counts(self) -> ArmCounts:
        return ArmCounts(**{**self.__dict__, "latencies_s": tuple(self.latencies_s)})


@dataclass
class StoreArms:
    """:class:`ArmSource` over the gateway's database; ``sample_percent`` of the served answers (chosen by response id,
    the same ones at every look) are judged by ``verifier``."""

    store: GatewayStore
    verifier: Verifier | None = None
    sample_percent: float = 100.0
    _verdicts: dict[str, bool] = field(default_factory=dict)

    def counts(self, *, production: str, canary: str, since: float) -> tuple[ArmCounts, ArmCounts]:
        arms = {production: _Tally(), canary: _Tally()}
        for turn in self.store.turns_since(since):
            tally = arms.get(turn["adapter"] or turn["served_model"])
            if tally is None or turn["model"] not in SPLIT_IDS or turn["status"] != "ok":
                continue
            tally.answers += 1
            tally.thumbs_down += turn["rating"] == "down"
            tally.handoffs += turn["abstained"]
            tally.withdrawals += bool((turn["withdrawn"] or "").strip())
            tally.latencies_s.append(max(0.0, float(turn["latency_ms"])) / 1000)
            wrong = self._judge(turn)
            if wrong is not None:
                tally.sampled += 1
                tally.wrong_served += wrong
        return arms[production].counts(), arms[canary].counts()

    def _judge(self, turn: dict[str, Any]) -> bool | None:
        """Whether a sampled served answer is wrong-served (unsupported by its passages); None when not judged (no
        verifier, not sampled, or a handoff: no answer was served)."""
        rid = turn["response_id"]
        if self.verifier is None or turn["abstained"] or not _sampled(rid, self.sample_percent):
            return None
        if rid not in self._verdicts:
            outcome = (turn["verification"] or {}).get("outcome", "answered")
            text = turn["answer"] or ""
            claim = text.split("\n", 1)[1] if outcome == "fallback" and "\n" in text else text  # less its framing
            self._verdicts[rid] = not self.verifier.verify(claim, logged_passages(turn)).grounded
        return self._verdicts[rid]


def _sampled(response_id: str, percent: float) -> bool:
    return int(hashlib.sha256(response_id.encode()).hexdigest()[:8], 16) % 10_000 < percent * 100

