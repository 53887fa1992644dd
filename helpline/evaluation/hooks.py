"""Entry points other areas call: the regression suite after a knowledge-base sync."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from helpline.platform.context import Context

SUPPORT_SUITE = Path(__file__).parent / "suites" / "support.yaml"


def regression_after_sync(
    ctx: Context, *, model: str = "production", suite: Path = SUPPORT_SUITE, limit: int = 0, responder: Any = None
) -> dict[str, Any]:
    """Run the support suite against the freshly synced knowledge base and keep the summary.

    Call it after ``KnowledgeBase.sync`` (e.g. `helpline kb sync --check`); the summary is written to
    ``reports/regression-after-sync-<time>.json`` and returned, so the caller can warn when the pass
    rate dropped since the previous sync.
    """
    from helpline.evaluation.regression.cases import load_suite
    from helpline.evaluation.regression.factory import build_responder
    from helpline.evaluation.regression.generators import suite_cases
    from helpline.evaluation.regression.runner import run_suite

    loaded = load_suite(suite)
    cases = suite_cases(loaded, data_dir=Path("."), limit=limit)
    result = run_suite(loaded.name, cases, responder or build_responder(ctx, model))
    summary = result.summary()
    previous = sorted(ctx.workspace.reports.glob("regression-after-sync-*.json"))
    if previous:
        before = json.loads(previous[-1].read_text())["summary"]["pass_rate"]
        summary["previous_pass_rate"] = before
        summary["dropped"] = summary["pass_rate"] < before
    path = ctx.workspace.reports / f"regression-after-sync-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    summary["report"] = str(path)
    return summary
