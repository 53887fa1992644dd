"""The promotion gate of `helpline improve`: the gate's own suites (``evaluation/gate.yaml``), plus the held-out
staff corrections as a suite of their own, scored as served.

The held-out corrections (``heldout.yaml``, written by ``training/loop/heldout.py``) are asked of both models
through the same pipeline the gate's suites were answered with, which is the gateway's code path (retrieval for
the caller's role, the support prompt, generation, the one answer decision; ``evaluation/answer_paths.py``). A
candidate trained on corrections must answer the corrections it never saw at least as well as production does, and
serve no more wrong answers to them: two checks beside the gate's, in the same report and the same verdict.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpline.evaluation.answer_paths import through_pipeline
from helpline.evaluation.answers import evaluate, read_cases
from helpline.evaluation.gate import GateConfig, Thresholds, gate_run, load_gate_config, run_gate, track_gate
from helpline.evaluation.regression.factory import build_responder
from helpline.evaluation.report import Check, GateReport, write_gate_report
from helpline.guard.selection import chosen_detector, load_detector
from helpline.platform.context import Context
from helpline.retrieval.factory import build_embedder

#: The gate as the loop calls it: (candidate, baseline, held-out answer set or None) → the verdict, not yet recorded.
GateRunner = Callable[[str, str, Path | None], GateReport]
SUITE = "heldout corrections"


def heldout_checks(cand: dict[str, Any], base: dict[str, Any], thresholds: Thresholds) -> list[Check]:
    """The held-out corrections as served (`eval answers` summaries): the candidate answers them correctly at least
    as often as the baseline, less the gate's allowed pass-rate drop, and serves no more wrong answers."""
    checks = []
    c, b = cand["correct_rate"], base["correct_rate"]
    if c is not None and b is not None:
        drop = thresholds.max_pass_rate_drop
        checks.append(Check(f"{SUITE}: correct as served vs baseline", c, b, f"drop ≤ {drop}", b - c <= drop + 1e-9))
    c, b = cand["wrong_served_rate"], base["wrong_served_rate"]
    if c is not None and b is not None:
        rise = thresholds.max_wrong_served_increase
        checks.append(Check(f"{SUITE}: wrong served vs baseline", c, b, f"rise ≤ {rise}", c - b <= rise + 1e-9))
    return checks


def with_heldout(report: GateReport, cand: dict[str, Any], base: dict[str, Any], thresholds: Thresholds) -> GateReport:
    """``report`` with the held-out checks and summaries added, and its verdict taken again over every check."""
    report.checks = [*report.checks, *heldout_checks(cand, base, thresholds)]
    report.summaries = {**report.summaries, "heldout@candidate": cand, "heldout@baseline": base}
    report.passed = all(c.passed for c in report.checks)
    return report


class PromotionGate:
    """The real gate (a :data:`GateRunner`): suites and the answer set of the gate config, then the held-out
    corrections through the pipeline each model was answered with; writes the HTML report."""

    def __init__(
        self, ctx: Context, *, config: Path | None, limit: int | None, data_dir: Path, progress: bool = False
    ) -> None:
        self.ctx = ctx
        self.cfg: GateConfig = load_gate_config(config)
        if limit is not None:
            self.cfg.limit_per_suite = limit
        self.data_dir = data_dir
        self.progress = progress

    def __call__(self, candidate: str, baseline: str, heldout: Path | None) -> GateReport:
        with gate_run(self.ctx.tracker, candidate, baseline, self.cfg) as tracked:  # a tracked run, as `eval gate`
            report = self._judge(candidate, baseline, heldout)
            track_gate(tracked, report)
        return report

    def _judge(self, candidate: str, baseline: str, heldout: Path | None) -> GateReport:
        ctx, cfg = self.ctx, self.cfg
        responders: dict[str, Any] = {}

        def responder_for(model: str) -> Any:
            responders[model] = build_responder(ctx, model=model, mode=cfg.mode, max_tokens=cfg.max_tokens)  # type: ignore[arg-type]
            return responders[model]

        detector = chosen_detector(ctx.registry, cfg.detector)
        report, cand, base = run_gate(
            candidate,
            baseline,
            cfg,
            responder_for=responder_for,
            data_dir=self.data_dir,
            reports_dir=ctx.workspace.reports,
            embedder=build_embedder(ctx, backend="torch"),
            verifier=None if detector is None else load_detector(ctx, detector),
            progress=self.progress,
        )
        pipelines = {m: getattr(r, "pipeline", None) for m, r in responders.items()}
        if heldout is None or any(p is None for p in pipelines.values()):  # direct mode serves nothing as served
            return report
        cases = read_cases(heldout)
        summaries = {m: evaluate(cases, through_pipeline(p), progress=self.progress)[0] for m, p in pipelines.items()}
        with_heldout(report, summaries[candidate], summaries[baseline], cfg.thresholds)
        write_gate_report(report, cand, base, Path(report.report_path))
        return report
