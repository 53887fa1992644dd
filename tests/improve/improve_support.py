"""Fakes for the loop's parts (training, the gate, the canary's arms, the clock) over a real registry and gateway
database in a temporary workspace, and corrections seeded as the review route stores them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.evaluation.report import Check, GateReport
from helpline.improve.options import ImproveOptions
from helpline.improve.steps import Parts
from helpline.platform.context import Context
from helpline.platform.settings import CanarySettings
from helpline.serving.canary import ArmCounts
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import ModelRouter
from helpline.testing.serving import FakeBackend

PASSAGES = {
    "refunds": "Refunds reach your card within 14 days of the return arriving at our warehouse.",
    "address": "You can change the delivery address within 2 hours of ordering, in Account > Orders.",
    "express": "Express shipping costs €9.90 and arrives the next working day.",
    "cancel": 'To cancel an order, open Account > Orders and click "Cancel order" before it ships.',
}
#: (question, the answer production served and a customer rated down, the staff correction) per article.
CORRECTED = {
    "refunds": (
        "How long does a refund take?",
        "Refunds take about 30 days.",
        "Your refund reaches your card within 14 days of the return arriving.",
    ),
    "address": (
        "Can I change my delivery address?",
        "No, addresses cannot be changed.",
        "Yes: change it in Account > Orders within 2 hours of ordering.",
    ),
    "express": (
        "What does express shipping cost?",
        "Express shipping is free.",
        "Express shipping costs €9.90 and arrives the next working day.",
    ),
    "cancel": (
        "How do I cancel my order?",
        "Call us to cancel.",
        'Open Account > Orders and click "Cancel order" before it ships.',
    ),
}

BALANCED = ArmCounts(answers=400, thumbs_down=20)
WORSE = ArmCounts(answers=400, thumbs_down=300)
FEW = ArmCounts(answers=5, thumbs_down=1)


def seed_correction(store: GatewayStore, doc: str, *, rid: str | None = None) -> str:
    """A served turn rated down, then corrected by staff, stored as the review route stores it."""
    rid = rid or f"resp-{doc}"
    question, served, correction = CORRECTED[doc]
    passage = {"doc_id": doc, "title": doc.title(), "chunk_id": f"{doc}#0", "score": 0.9, "text": PASSAGES[doc]}
    store.record_turn(
        response_id=rid,
        conversation_id=f"conv-{rid}",
        at=1.0,
        key_id=1,
        role="customer",
        model="helpline-support",
        served_model="base",
        adapter=None,
        messages=[{"role": "user", "content": question}],
        passages=[passage],
        answer=served,
        abstained=0,
        latency_ms=800.0,
        status="ok",
        withdrawn=None,
        verification=None,
        origins=["client"],
        internal=0,
    )
    store.add_feedback(rid, rating="down", comment="wrong", key_id=1)
    store.add_feedback(rid, rating="down", comment="wrong", correction=correction, key_id=2)  # the review route
    return rid


@dataclass
class FakeTraining:
    """Writes an adapter folder and a summary as the recipes do; registers on export. ``fail`` names parts that raise
    once (a crash midway); ``calls`` records every call."""

    ctx: Context
    fail: set[str] = field(default_factory=set)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def _run(self, part: str, out_dir: Path, **kw: Any) -> dict[str, Any]:
        self.calls.append((part, kw))
        if part in self.fail:
            self.fail.discard(part)
            raise RuntimeError(f"{part} crashed")
        (out_dir / "adapter").mkdir(parents=True)
        (out_dir / "adapter" / "adapter_config.json").write_text(
            json.dumps({"r": 16, **{k: str(v) for k, v in kw.items()}})
        )
        return {"run_dir": str(out_dir), "artifact": str(out_dir / "adapter"), "global_step": 2, "train_loss": 1.0}

    def sft(self, dataset: Path, out_dir: Path, *, base_model: str) -> dict[str, Any]:
        return self._run("sft", out_dir, dataset=dataset, base_model=base_model)

    def preference(
        self, pairs: Path, out_dir: Path, *, base_model: str, init_adapter: Path, eval_pairs: Path | None = None
    ) -> dict[str, Any]:
        return self._run("preference", out_dir, pairs=pairs, base_model=base_model, init_adapter=init_adapter,
                         eval_pairs=eval_pairs)  # fmt: skip

    def export(self, run_dir: Path, *, name: str) -> dict[str, Any]:
        self.calls.append(("export", {"run_dir": run_dir, "name": name}))
        if "export" in self.fail:
            self.fail.discard("export")
            raise RuntimeError("export crashed")
        folder = self.ctx.workspace.models / name
        folder.mkdir(parents=True)
        pairs = {"path": str(run_dir), "name": "pairs", "version": "pairs", "hash": "x"}
        self.ctx.registry.register_model(
            name, kind="adapter", path=folder, base_model="base", metadata={"dataset": pairs}
        )
        return {"registered": name, "agreement": {"mean_prefix_agreement": 1.0}}

    def count(self, part: str) -> int:
        return sum(1 for name, _ in self.calls if name == part)


@dataclass
class FakeGate:
    """Passes or fails every candidate; records (candidate, baseline, held-out file)."""

    passed: bool = True
    calls: list[tuple[str, str, Path | None]] = field(default_factory=list)

    def __call__(self, candidate: str, baseline: str, heldout: Path | None) -> GateReport:
        self.calls.append((candidate, baseline, heldout))
        check = Check("support: pass rate vs baseline", 0.5 if self.passed else 0.1, 0.5, "drop ≤ 0.05", self.passed)
        return GateReport(candidate, baseline, self.passed, [check], report_path="gate.html")


@dataclass
class FakeArms:
    """Gives the next (production, canary) counts of ``looks`` at each look (the last one again when they run out)."""

    looks: list[tuple[ArmCounts, ArmCounts]]
    asked: list[dict[str, Any]] = field(default_factory=list)

    def counts(self, *, production: str, canary: str, since: float) -> tuple[ArmCounts, ArmCounts]:
        self.asked.append({"production": production, "canary": canary, "since": since})
        return self.looks[min(len(self.asked), len(self.looks)) - 1]


@dataclass
class Clock:
    """Time that moves only when someone sleeps."""

    t: float = 1_700_000_000.0
    slept: list[float] = field(default_factory=list)

    def now(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.t += seconds


@dataclass
class Loop:
    """A workspace with production on the base model, its gateway database, and fakes for the loop's parts."""

    ctx: Context
    store: GatewayStore
    training: FakeTraining
    gate: FakeGate
    arms: FakeArms
    clock: Clock

    def parts(self) -> Parts:
        return Parts(
            training=self.training,
            gate=self.gate,
            arms=self.arms,
            store=self.store,
            router=ModelRouter(self.ctx.registry, FakeBackend()),
            canary=CANARY,
            verifier=None,
            now=self.clock.now,
            sleep=self.clock.sleep,
        )

    def actions(self) -> list[str]:
        """The audit log's actions by `helpline improve`, oldest first."""
        return [e["action"] for e in reversed(self.store.audit_log(1000)) if e["actor"] == "helpline improve"]


#: Only thumbs-down is tested, with a wide margin: the fakes' counts decide quickly and predictably.
CANARY = CanarySettings(
    thumbs_down_margin=0.2,
    handoff_margin=None,
    withdrawal_margin=None,
    wrong_served_margin=None,
    latency_margin=None,
    min_answers=50,
    max_answers=100_000,
)


def options(**values: Any) -> ImproveOptions:
    """Tiny-run options: no wait on the canary unless asked."""
    return ImproveOptions(**{"canary_wait_s": 0.0, "canary_poll_s": 60.0, **values})
