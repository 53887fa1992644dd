"""The promotion policy: a model goes live only with a passing evaluation-gate report.

The gate (helpline.evaluation) writes its verdict into the model's registry metadata
(``metadata["gate"]``); this module only reads it, so every edge that promotes (the CLI, the
gateway's admin route) enforces the same rule without importing the evaluation package.
"""

from __future__ import annotations

import time
from typing import Any

from helpline.platform.errors import HelplineError
from helpline.platform.registry import Registry


class GateError(HelplineError):
    """A model lacks a passing gate report."""

    exit_code = 3
    http_status = 409


def require_passing_gate(registry: Registry, model_name: str, *, max_age_days: float | None = None) -> dict[str, Any]:
    """Raise :class:`GateError` unless ``model_name`` has a passing (and recent enough) gate report."""
    record = registry.chat_model(model_name)
    gate = record.metadata.get("gate")
    run = f"helpline eval gate --candidate {record.name} --baseline production"
    if not gate:
        raise GateError(f"{record.name} has no gate report", hint=f"run `{run}` first (or promote with --force)")
    if not gate.get("passed"):
        failed = ", ".join(gate.get("failed_checks", [])) or "see the report"
        raise GateError(
            f"{record.name} failed its gate ({failed}); report: {gate.get('report')}",
            hint=f"fix the regressions and run `{run}` again",
        )
    if max_age_days is not None and time.time() - float(gate.get("at", 0)) > max_age_days * 86400:
        raise GateError(f"{record.name}'s gate report is older than {max_age_days} days", hint=f"run `{run}` again")
    return gate
