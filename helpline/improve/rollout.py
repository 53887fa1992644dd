"""Putting a candidate live: as the canary with a share of the traffic, then production or nothing.

Every alias move goes through :class:`~helpline.serving.routing.ModelRouter`, the path the gateway's admin routes
take, so the promotion rule holds (``platform/promotion.py``: no passing gate report, no promotion). The canary
share is stored where the admin route stores it (the ``canary_share`` setting of the gateway's database) and
audited as it audits it. A gateway reads that setting when it starts; one already running keeps the share it
has until it is restarted or the share is set through its admin route.

The registry cannot unset an alias, so a canary rolled back is cleared by pointing the ``canary`` alias at the
model production serves (and the share goes to 0): nothing the candidate answers is served any more.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpline.improve.arms import ArmSource
from helpline.platform.errors import HelplineError, NotFoundError
from helpline.platform.registry import ModelRecord
from helpline.platform.settings import CanarySettings
from helpline.serving.canary import CanaryDecision, decide
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import ModelRouter

ACTOR = "helpline improve"


class CanaryPending(HelplineError):
    """The canary is still undecided when this run stops watching it: the run stays at its canary step."""

    exit_code = 0

    def __init__(self, decision: CanaryDecision, candidate: str) -> None:
        super().__init__(
            f"the canary {candidate} is still undecided after {decision.canary_answers} canary answers",
            hint="run `helpline improve` again (or let `--every` do it) to look again; it resumes the canary",
        )
        self.decision = decision


class ExportChecked:
    """The router's backend here: the export gate has already loaded the adapter in the real serving engine, and
    a gateway loads it again on its first request, so this only checks its files are still there."""

    def generator_for(self, record: ModelRecord) -> Any:
        path = Path(record.path)
        if not path.exists():
            raise NotFoundError(
                f"{record.name}'s files are gone ({path})", hint="export the adapter again under a new name"
            )
        return None


@dataclass
class Rollout:
    """The alias and share moves of one loop, audited in the gateway's database."""

    router: ModelRouter
    store: GatewayStore
    run: str

    def set_share(self, percent: float) -> None:
        """Send ``percent`` of new conversations on the production id to the canary (as the admin route does)."""
        self.router.set_canary_share(percent)
        self.store.set_setting("canary_share", str(percent))
        self.store.audit(ACTOR, "model.canary_share", "canary", {"percent": percent, "run": self.run})

    def start(self, candidate: str, share: float) -> dict[str, Any]:
        """``candidate`` to the canary alias (gate checked), then its share of the traffic."""
        change = self.router.promote(candidate, alias="canary", actor=ACTOR)
        self.store.audit(ACTOR, "model.promote", "canary", {**change.model_dump(), "run": self.run})
        self.set_share(share)
        return {"canary": candidate, "previous_canary": change.previous, "share": share}

    def promote(self, candidate: str, *, canary_started: bool) -> dict[str, Any]:
        """``candidate`` to production, through the promotion rule; a canary that ran gets no more traffic."""
        change = self.router.promote(candidate, alias="production", actor=ACTOR)
        self.store.audit(ACTOR, "model.promote", "production", {**change.model_dump(), "run": self.run})
        if canary_started:
            self.set_share(0.0)
        return {"production": change.model_name, "previous": change.previous}

    def roll_back(self) -> dict[str, Any]:
        """Stop the canary: share 0, and the canary alias cleared (pointed at production's model, see above)."""
        self.set_share(0.0)
        production = self.router.registry.chat_model("production").name
        change = self.router.registry.set_alias("canary", production, actor=ACTOR)
        self.store.audit(ACTOR, "model.canary_cleared", "canary", {**change.model_dump(), "run": self.run})
        return {"canary": production, "previous_canary": change.previous}


def watch(
    arms: ArmSource,
    settings: CanarySettings,
    *,
    production: str,
    canary: str,
    started_at: float,
    wait_s: float,
    poll_s: float,
    now: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
) -> CanaryDecision:
    """Look at the arms and decide (``serving/canary.py``: any number of looks keeps its error rates), again every
    ``poll_s`` while it says continue, until ``wait_s`` has passed; returns the last decision."""
    deadline = now() + wait_s
    while True:
        production_counts, canary_counts = arms.counts(production=production, canary=canary, since=started_at)
        decision = decide(production_counts, canary_counts, settings, elapsed_s=max(0.0, now() - started_at))
        left = deadline - now()
        if decision.action != "continue" or left <= 0:
            return decision
        sleep(min(poll_s, left))
