"""The steps of one `helpline improve` run, in order (``platform/runs.py`` runs them and resumes them):

1. ``collect``: what staff and customers said since the last finished run (its cursor), scrubbed, deduplicated,
   split with held-out corrections and mixed with replay rows of production's dataset, in one step: the collection
   holds unscrubbed text, so it never leaves the process; only the scrubbed files are written. Fewer new corrections
   than ``min_corrections``: the run ends here, recorded, and the cursor stays where it was.
2. ``train_sft``: a fresh adapter on production's base over the mix (``training.py`` says why not from production's
   adapter: the mix replays production's own rows instead).
3. ``train_preference``: DPO (or ORPO) continuing that adapter on the (correction, replaced draft) pairs; skipped,
   with the reason, when there are none.
4. ``export``: the export gate on the final adapter, registered as ``improve-RUN`` with its lineage: the mix's
   manifest, the corrections' response ids, the parent adapter and both training runs.
5. ``gate``: the promotion gate with the held-out corrections as a suite of their own (``gating.py``); its verdict is
   recorded on the candidate. A failed gate ends the run: production unchanged, an audit entry says so.
6. ``canary_start``: the candidate to the ``canary`` alias with its share of the traffic.
7. ``canary``: look at both arms until the sequential test decides or the wait ends; promote (production ← candidate,
   share 0) or roll back (share 0, canary cleared). Still undecided: the step raises :class:`CanaryPending` and the
   run stays resumable at it (recorded ``failed`` with that error, as an interrupted step is).
   With ``skip_canary`` the candidate is promoted right after the gate instead.

A step that has nothing to do because of an earlier one returns ``{"skipped": why}``. Every step leaves an audit
entry in the gateway's database (actor ``helpline improve``): done, failed, or pending.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpline.answering.decision import Verifier
from helpline.evaluation.gate import record_gate
from helpline.improve.arms import ArmSource
from helpline.improve.gating import GateRunner
from helpline.improve.options import ImproveOptions
from helpline.improve.rollout import ACTOR, CanaryPending, Rollout, watch
from helpline.improve.training import Training, write_sft_dataset
from helpline.platform.context import Context
from helpline.platform.runs import Step, StepContext
from helpline.platform.settings import CanarySettings
from helpline.serving.canary import CanaryDecision
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import ModelRouter
from helpline.training.loop.collect import collect
from helpline.training.loop.mix import build_loop_dataset, replay_source

STEPS = ("collect", "train_sft", "train_preference", "export", "gate", "canary_start", "canary")
Outputs = Mapping[str, Mapping[str, Any]]


@dataclass
class Parts:
    """What the steps work with, passed in so a test can give fakes for training, the gate and the arms."""

    training: Training
    gate: GateRunner
    arms: ArmSource
    store: GatewayStore
    router: ModelRouter
    canary: CanarySettings
    verifier: Verifier | None = None  # judges thumbs-up answers (collect) and sampled canary answers (arms)
    now: Callable[[], float] = field(default=time.time)
    sleep: Callable[[float], None] = field(default=time.sleep)


def candidate_name(run: str) -> str:
    """The registry name of a run's candidate (a run's own: a resumed export knows it by it)."""
    return f"improve-{run}"


def skipped(outputs: Outputs) -> str | None:
    """Why the run stopped before this step, if an earlier step stopped it (the first reason given)."""
    for name in STEPS:
        out = outputs.get(name, {})
        if name == "gate" and out and not out.get("passed"):
            return f"the candidate failed the promotion gate ({out.get('report')})"
        if out.get("skipped") and name not in ("train_preference", "canary_start"):
            return str(out["skipped"])
    return None


def build_steps(
    ctx: Context, options: ImproveOptions, parts: Parts, *, run: str, cursor: Callable[[], float | None]
) -> list[Step]:
    """The run's steps (see the module docstring); ``cursor`` gives where collection starts (the last finished
    run's), asked when the collect step runs."""
    loop = _Loop(ctx, options, parts, run=run, cursor=cursor)
    bodies = (
        loop.collect,
        loop.train_sft,
        loop.train_preference,
        loop.export,
        loop.gate,
        loop.canary_start,
        loop.canary,
    )
    return [Step(name, _audited(name, body, parts.store, run)) for name, body in zip(STEPS, bodies, strict=True)]


def _audited(
    name: str, body: Callable[[StepContext], dict[str, Any]], store: GatewayStore, run: str
) -> Callable[[StepContext], dict[str, Any]]:
    """``body`` with an audit entry for its outcome: done (with its outputs), pending (a canary), or failed."""

    def step(sc: StepContext) -> dict[str, Any]:
        try:
            out = body(sc)
        except CanaryPending as e:
            store.audit(ACTOR, f"improve.{name}.pending", run, e.decision.to_dict())
            raise
        except BaseException as e:  # interrupted too: the audit log shows where a run stopped
            store.audit(ACTOR, f"improve.{name}.failed", run, {"error": f"{type(e).__name__}: {e}"})
            raise
        store.audit(ACTOR, f"improve.{name}", run, out)
        return out

    return step


class _Loop:
    """The step bodies over one run's context, options and parts."""

    def __init__(
        self, ctx: Context, options: ImproveOptions, parts: Parts, *, run: str, cursor: Callable[[], float | None]
    ) -> None:
        self.ctx, self.options, self.parts, self.run, self.cursor = ctx, options, parts, run, cursor
        self.registry = ctx.registry
        self.rollout = Rollout(parts.router, parts.store, run)

    def collect(self, sc: StepContext) -> dict[str, Any]:
        o, since = self.options, self.cursor()
        production = self.registry.chat_model("production")
        collection = collect(self.parts.store, since=since, staff_facing=o.staff_facing, verifier=self.parts.verifier)
        out: dict[str, Any] = {
            "since": since,
            "production": production.name,
            "base_model": self.registry.base_of(production).name,
            "parent_adapter": production.name if production.kind == "adapter" else None,
            "counts": collection.counts(),
        }
        corrections = len(collection.corrections)
        if corrections < o.min_corrections:
            why = f"{corrections} new staff correction(s), fewer than min_corrections={o.min_corrections}"
            return {**out, "until": since, "skipped": why}  # the cursor stays: they wait for the next run
        data = build_loop_dataset(
            collection,
            out_dir=sc.scratch / "data",
            replay_from=replay_source(self.registry),
            replay_rows=o.replay_rows,
            heldout_share=o.heldout_share,
            seed=o.seed,
        )
        counts = data.manifest["counts"]
        out |= {
            "until": collection.cursor,
            "dir": data.out_dir,
            "manifest": data.manifest_path,
            "sft": data.sft_path,
            "pairs": data.pairs_path,
            "heldout": data.heldout_path,
            "heldout_pairs": data.heldout_pairs_path,
            "mix": counts,
            "response_ids": data.manifest["response_ids"],
        }
        if counts["train_rows"] == 0:
            return {**out, "skipped": "nothing new to train on (every collected turn was a duplicate or held out)"}
        return out

    def train_sft(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        c = sc.outputs["collect"]
        dataset = write_sft_dataset(
            Path(c["sft"]),
            sc.scratch / "dataset",
            name=candidate_name(self.run),
            loop_manifest=Path(c["manifest"]),
            seed=self.options.seed,
        )
        summary = self.parts.training.sft(Path(dataset["path"]), sc.scratch / "run", base_model=c["base_model"])
        return {
            "run_dir": summary["run_dir"],
            "adapter": summary["artifact"],
            "dataset": dataset,
            **{k: summary.get(k) for k in ("global_step", "train_loss", "best_eval_loss", "train_examples")},
        }

    def train_preference(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        c, sft = sc.outputs["collect"], sc.outputs["train_sft"]
        if not c["mix"]["pairs"]:
            return {"skipped": "no (correction, replaced draft) pairs among the new corrections: nothing to prefer"}
        held = Path(c["heldout_pairs"]) if c["mix"].get("heldout_pairs") else None  # a run from before: none
        summary = self.parts.training.preference(
            Path(c["pairs"]), sc.scratch / "run", base_model=c["base_model"], init_adapter=Path(sft["adapter"]),
            eval_pairs=held,
        )  # fmt: skip
        return {
            "run_dir": summary["run_dir"],
            "adapter": summary["artifact"],
            "method": self.options.method,
            **{k: summary.get(k) for k in ("global_step", "train_loss", "train_pairs")},
            "heldout_pairs": summary.get("eval"),  # chosen preferred on held-out corrections, before and after
        }

    def export(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        c, sft, pref = sc.outputs["collect"], sc.outputs["train_sft"], sc.outputs["train_preference"]
        final = Path((sft if pref.get("skipped") else pref)["run_dir"])
        name = candidate_name(self.run)
        if any(m.name == name for m in self.registry.list_models()):
            report: dict[str, Any] = {"registered": name, "note": "registered by an earlier attempt of this step"}
        else:
            leftover = self.ctx.workspace.models / name  # an attempt killed between copying and registering
            if leftover.exists():
                shutil.rmtree(leftover)
            report = self.parts.training.export(final, name=name)
        lineage = {
            "run": self.run,
            "run_dir": str(sc.run_dir),
            "manifest": c["manifest"],
            "corrections": c["response_ids"],
            "parent_adapter": c["parent_adapter"],
            "production_at_start": c["production"],
            "sft_run": sft["run_dir"],
            "preference": dict(pref),
            "collected": c["counts"],
            "mix": c["mix"],
        }
        record = self.registry.update_metadata(name, {"improve": lineage, "dataset": sft["dataset"]})
        agreement = (report.get("agreement") or {}).get("mean_prefix_agreement")
        return {"candidate": name, "path": record.path, "from_run": str(final), "agreement": agreement}

    def gate(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        c, candidate = sc.outputs["collect"], sc.outputs["export"]["candidate"]
        baseline = self.registry.chat_model("production").name
        heldout = Path(c["heldout"]) if c["mix"]["heldout_cases"] else None  # an empty suite is no suite
        report = self.parts.gate(candidate, baseline, heldout)
        record_gate(self.registry, candidate, report)
        failed = [ck.name for ck in report.checks if not ck.passed]
        out = {
            "passed": report.passed,
            "candidate": candidate,
            "baseline": baseline,
            "report": report.report_path,
            "failed_checks": failed,
            "heldout": report.summaries.get("heldout@candidate"),
            "heldout_baseline": report.summaries.get("heldout@baseline"),
            "heldout_skipped": None if heldout else "no held-out correction could be scored",
        }
        if not report.passed:
            self.parts.store.audit(
                ACTOR, "improve.refused", candidate, {"run": self.run, "failed_checks": failed, "production": baseline}
            )
        return out

    def canary_start(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        if self.options.skip_canary:
            return {"skipped": "skip_canary: promoted right after the gate"}
        candidate = sc.outputs["export"]["candidate"]
        production = self.registry.chat_model("production").name
        started = self.rollout.start(candidate, self.options.canary_share)
        return {**started, "started_at": self.parts.now(), "production": production}

    def canary(self, sc: StepContext) -> dict[str, Any]:
        if why := skipped(sc.outputs):
            return {"skipped": why}
        candidate, start = sc.outputs["export"]["candidate"], sc.outputs["canary_start"]
        started = not start.get("skipped")
        if self.options.skip_canary or not started:
            return {
                "decision": "promote",
                "reasons": ["skip_canary: no canary"],
                **self.rollout.promote(candidate, canary_started=started),
            }
        production = self.registry.chat_model("production").name
        if production != start["production"]:
            why = f"production moved to {production} during the canary (from {start['production']})"
            return {"decision": "rollback", "reasons": [why], **self.rollout.roll_back()}
        decision = self._watch(candidate, production, started_at=float(start["started_at"]))
        if decision.action == "continue":
            raise CanaryPending(decision, candidate)
        done = (
            self.rollout.promote(candidate, canary_started=True)
            if decision.action == "promote"
            else (self.rollout.roll_back())
        )
        return {"decision": decision.action, "reasons": list(decision.reasons), "detail": decision.to_dict(), **done}

    def _watch(self, candidate: str, production: str, *, started_at: float) -> CanaryDecision:
        settings = self.parts.canary
        if self.parts.verifier is None and settings.wrong_served_margin is not None:
            settings = settings.model_copy(update={"wrong_served_margin": None})  # nothing can judge it
        o = self.options
        return watch(
            self.parts.arms,
            settings,
            production=production,
            canary=candidate,
            started_at=started_at,
            wait_s=o.canary_wait_s,
            poll_s=o.canary_poll_s,
            now=self.parts.now,
            sleep=self.parts.sleep,
        )
