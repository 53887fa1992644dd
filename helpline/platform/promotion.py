"""The promotion policy: a model goes live only with a passing evaluation-gate report.

The gate (helpline.evaluation) writes its verdict into the model's registry metadata
(``metadata["gate"]``); this module only reads it, so every edge that promotes (the CLI, the
gateway's admin route) enforces the same rule without importing the evaluation package.

A rollback is held to the same rule, with one exception: the rollback that undoes an alias's latest
promotion returns, ungated, to the model the alias served just before it (whatever put that model there:
the gate, ``init``, or an admin's ``--force``). Its weights cannot have changed since, because a name in
an alias's history is never registered again. A rollback further back (one after another rollback) goes
to the model before that one only if it passes the gate, as promoting it would; it never returns to the
model just rolled back (see ``Registry.rollback``).
"""

from __future__ import annotations

import time
from typing import Any

from helpline.platform.errors import HelplineError
from helpline.platform.registry import AliasChange, Registry


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


def rollback_target(registry: Registry, alias: str = "production") -> str:
    """The model rolling ``alias`` back would serve, held to the rule above: :class:`GateError` when it lies
    further back than the model served before the latest promotion and has no passing gate report."""
    step = registry.rollback_step(alias)
    if step.undoes_promotion:
        return step.model_name
    name = step.model_name
    try:
        require_passing_gate(registry, name)
    except GateError as e:
        raise GateError(
            f"rolling {alias} back to {name} needs a passing gate, as promoting it would: {e.message}",
            hint=f"{name} is further back than the model {alias} served before its latest promotion; run "
            f"`helpline eval gate --candidate {name} --baseline production`, or put it live by hand with "
            f"`helpline models promote {name} --force` (recorded as forced; the admin role through the gateway)",
        ) from e
    return name


def rollback(registry: Registry, alias: str = "production", *, actor: str) -> AliasChange:
    """Roll ``alias`` back one step in its history, under the promotion rule (:func:`rollback_target`)."""
    return registry.rollback(alias, actor=actor, expect=rollback_target(registry, alias))
