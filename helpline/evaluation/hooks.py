"""Entry points other areas call: the regression suite after a knowledge-base sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from helpline.evaluation.answer_paths import through_pipeline
from helpline.evaluation.answers import evaluate, read_cases
from helpline.evaluation.regression.cases import load_suite
from helpline.evaluation.regression.factory import build_responder
from helpline.evaluation.regression.generators import suite_cases
from helpline.evaluation.regression.runner import run_suite
from helpline.platform.context import Context
from helpline.platform.tracking import track_report

SUPPORT_SUITE = Path(__file__).parent / "suites" / "support.yaml"
PREFIX = "regression-after-sync-"
SCORE_TOLERANCE = 0.01  # a mean case score this much lower counts as worse (small models rarely change pass/fail)


def regression_after_sync(
    ctx: Context,
    *,
    model: str = "production",
    suite: Path = SUPPORT_SUITE,
    limit: int = 0,
    responder: Any = None,
    questions: Path | None = None,
) -> dict[str, Any]:
    """Run the support suite against the freshly synced knowledge base and keep the summary.

    `helpline kb sync --check` calls it after the sync. The report is written to
    ``reports/regression-after-sync-<time>.json`` and the summary returned with ``dropped``: whether the
    pass rate, or the mean case score by more than ``SCORE_TOLERANCE``, fell since the previous check
    of the same model (a check of another model is no baseline; then ``dropped`` is absent). With
    ``questions`` (a help-centre folder's own QUESTIONS.yaml) those are answered as served too, and a
    rise of the wrong-served rate also counts as dropped.
    """

    loaded = load_suite(suite)
    cases = suite_cases(loaded, data_dir=Path("."), limit=limit)
    responder = responder or build_responder(ctx, model=model)
    params = {"suite": str(suite), "model": model, "limit": limit, "questions": str(questions) if questions else None}
    with ctx.tracker.start_run(kind="eval-after-sync", name=f"after sync {model}", params=params) as tracked:
        result = run_suite(loaded.name, cases, responder)
        summary = result.summary()
        if questions is not None and getattr(responder, "pipeline", None) is not None:
            summary["answers"] = evaluate(read_cases(questions), through_pipeline(responder.pipeline))[0]
        track_report(tracked, {**result.to_dict(), "summary": summary})
    earlier = (
        json.loads(p.read_text())["summary"] for p in sorted(ctx.workspace.reports.glob(f"{PREFIX}*.json"))[::-1]
    )
    before = next(
        (s for s in earlier if s.get("model") == summary["model"] and s.get("suite") == summary["suite"]), None
    )
    if before is not None:  # the newest check of the same model and suite (older reports are not read)
        summary["previous_pass_rate"] = before["pass_rate"]
        summary["previous_mean_score"] = before.get("mean_score")
        summary["dropped"] = summary["pass_rate"] < before["pass_rate"] or (
            before.get("mean_score") is not None and summary["mean_score"] < before["mean_score"] - SCORE_TOLERANCE
        )
        wrong, was = (
            (summary.get("answers") or {}).get("wrong_served_rate"),
            (before.get("answers") or {}).get("wrong_served_rate"),
        )
        if wrong is not None and was is not None:
            summary["previous_wrong_served_rate"] = was
            summary["dropped"] = summary["dropped"] or wrong > was
    path = ctx.workspace.reports / f"{PREFIX}{time.strftime('%Y%m%d-%H%M%S')}-{time.time_ns() % 10**9:09d}.json"
    path.write_text(json.dumps({**result.to_dict(), "summary": summary}, indent=2, default=str))
    summary["report"] = str(path)
    return summary
