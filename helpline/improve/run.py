"""`helpline improve`: one run of the loop, resumed where the last one stopped, and the ``--every`` schedule.

Runs live in ``<workspace>/runs/improve/<RUN>/`` (``state.json`` and each step's folder, ``platform/runs.py``), named
by the time they began, so the latest sorts last. The order that keeps one run at a time and resumes the right one:

1. take ``improve.lock`` in that folder (held for the whole invocation: choosing the run and running it);
2. the latest run, unless it finished (or was abandoned), is this run: it resumes at its first step not done; else
   a new run starts. ``abandon`` gives up an unfinished one first (recorded in its folder and audited; a canary it
   started stops);
3. ``run_steps`` takes the runs' own lock (``run.lock``) and runs the steps (``steps.py``). The collect step starts
   from the cursor of the latest finished run, so what one run collected, the next does not collect again.
"""

from __future__ import annotations

import json
import re
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from helpline.improve.arms import StoreArms
from helpline.improve.gating import PromotionGate
from helpline.improve.options import ImproveOptions
from helpline.improve.rollout import ACTOR, CanaryPending, ExportChecked, Rollout
from helpline.improve.steps import Parts, build_steps, candidate_name
from helpline.improve.training import RecipeTraining
from helpline.platform.context import Context
from helpline.platform.errors import HelplineError
from helpline.platform.runs import RunState, hold_run_lock, read_state, run_steps
from helpline.serving.factory import build_verifier, open_gateway_store
from helpline.serving.routing import ModelRouter

LOCK = "improve.lock"
ABANDONED = "abandoned.json"
_RUN = re.compile(r"(\d{8}-\d{6})(?:-(\d+))?")  # when it began (and a count, for two in one second)


def runs_root(ctx: Context) -> Path:
    """Where the loop's runs live."""
    return ctx.workspace.root / "runs" / "improve"


def build_parts(ctx: Context, options: ImproveOptions, *, console: Any = None) -> Parts:
    """The real parts: the recipes, the promotion gate, the gateway's database and detector, a router that moves
    aliases under the promotion rule, and the canary settings."""
    store, verifier = open_gateway_store(ctx), build_verifier(ctx)
    o = options
    training = RecipeTraining(
        ctx,
        sft_config=o.sft_config,
        sft_steps=o.sft_steps,
        sft_set=o.sft_set,
        pref_config=o.pref_config,
        pref_steps=o.pref_steps,
        pref_set=o.pref_set,
        method=o.method,
        console=console,
    )
    gate = PromotionGate(
        ctx, config=o.gate_config, limit=o.gate_limit, data_dir=o.data_dir, progress=console is not None
    )
    router = ModelRouter(ctx.registry, ExportChecked())
    return Parts(
        training=training,
        gate=gate,
        arms=StoreArms(store, verifier=verifier),
        store=store,
        router=router,
        canary=ctx.settings.canary,
        verifier=verifier,
    )


def improve(
    ctx: Context, options: ImproveOptions, *, parts: Parts | None = None, console: Any = None
) -> dict[str, Any]:
    """Run (or resume) one run of the loop; returns what it did (``status``, the candidate, each step's outputs and
    wall time). A canary still undecided is not an error: ``status`` is ``canary_pending``."""
    root = runs_root(ctx)
    with hold_run_lock(root / LOCK, root):
        parts = parts or build_parts(ctx, options, console=console)
        run_dir, resumed = _pick_run(root, options, parts)
        steps = build_steps(ctx, options, parts, run=run_dir.name, cursor=lambda: last_cursor(root, before=run_dir))
        pending = None
        try:
            run_steps(run_dir, steps)
        except CanaryPending as e:
            pending = e.decision.to_dict()
        return run_report(ctx, run_dir, resumed=resumed, pending=pending)


def list_runs(root: Path) -> list[Path]:
    """The run folders, oldest first."""
    found = [(m, p) for p in (root.iterdir() if root.is_dir() else []) if p.is_dir() and (m := _RUN.fullmatch(p.name))]
    return [p for m, p in sorted(found, key=lambda mp: (mp[0].group(1), int(mp[0].group(2) or 1)))]


def last_cursor(root: Path, *, before: Path | None = None) -> float | None:
    """Where the latest finished run (other than ``before``) stopped collecting; None: collect everything."""
    for run in reversed(list_runs(root)):
        state = read_state(run) if run != before else None
        if state is not None and state.finished:
            return state.outputs.get("collect", {}).get("until")
    return None


def _pick_run(root: Path, options: ImproveOptions, parts: Parts) -> tuple[Path, bool]:
    """The unfinished latest run (resumed), or a new one; ``abandon`` gives the unfinished one up first."""
    runs = list_runs(root)
    latest = runs[-1] if runs else None
    if latest is not None and not (latest / ABANDONED).exists():
        state = read_state(latest)
        if state is None or not state.finished:
            if not options.abandon:
                return latest, True
            _abandon(latest, state, parts)
    name = time.strftime("%Y%m%d-%H%M%S", time.localtime(parts.now()))
    taken = {p.name for p in runs}
    name = next(n for n in (name, *(f"{name}-{i}" for i in range(2, 1000))) if n not in taken)
    (root / name).mkdir(parents=True)
    return root / name, False


def _abandon(run_dir: Path, state: RunState | None, parts: Parts) -> None:
    """Give up an unfinished run: recorded in its folder and the audit log; a canary it started stops."""
    outputs = state.outputs if state is not None else {}
    started = outputs.get("canary_start", {})
    stopped = None
    if started and not started.get("skipped") and "canary" not in outputs:
        stopped = Rollout(parts.router, parts.store, run_dir.name).roll_back()
    record = {"at": parts.now(), "by": ACTOR, "steps_done": list(outputs), "canary_stopped": stopped}
    (run_dir / ABANDONED).write_text(json.dumps(record, indent=2), encoding="utf-8")
    parts.store.audit(ACTOR, "improve.abandon", run_dir.name, record)


def outcome(outputs: dict[str, dict[str, Any]], *, pending: bool) -> str:
    """The run's outcome in a word: skipped, refused, promoted, rolled_back, canary_pending or incomplete."""
    if pending:
        return "canary_pending"
    if outputs.get("collect", {}).get("skipped") or outputs.get("train_sft", {}).get("skipped"):
        return "skipped"
    gate = outputs.get("gate", {})
    if gate and not gate.get("skipped") and not gate.get("passed"):
        return "refused"
    decision = outputs.get("canary", {}).get("decision")
    return {"promote": "promoted", "rollback": "rolled_back"}.get(decision or "", "incomplete")


def run_report(ctx: Context, run_dir: Path, *, resumed: bool, pending: dict[str, Any] | None) -> dict[str, Any]:
    """What a run did: its outcome, candidate, production now, and each step's status, wall time and outputs."""
    state = read_state(run_dir) or RunState()
    steps = {
        name: {
            "status": rec.status,
            "seconds": rec.seconds,
            "attempts": rec.attempts,
            "error": rec.error,
            "outputs": rec.outputs,
        }
        for name, rec in state.steps.items()
    }
    outputs = state.outputs
    status = outcome(outputs, pending=pending is not None)
    collect = outputs.get("collect", {})
    return {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "resumed": resumed,
        "status": status,
        "reason": collect.get("skipped") or outputs.get("train_sft", {}).get("skipped"),
        "candidate": outputs.get("export", {}).get("candidate") or (candidate_name(run_dir.name) if pending else None),
        "production": ctx.registry.aliases().get("production"),
        "gate": outputs.get("gate"),
        "canary": pending or outputs.get("canary"),
        "steps": steps,
    }


def run_every(
    run_once: Callable[[], dict[str, Any]],
    interval_s: float,
    *,
    wait: Callable[[float], bool],
    report: Callable[[dict[str, Any]], None],
    max_runs: int | None = None,
) -> int:
    """Run, then ``wait(interval_s)`` (True: stop), and again, one run at a time. A run that fails is reported as
    ``{"status": "error", ...}`` and the schedule goes on: the next tick resumes it. Returns how many ran."""
    runs = 0
    while True:
        try:
            report(run_once())
        except HelplineError as e:  # another run holds the lock, a refused export, ...: the next tick tries again
            report({"status": "error", "error": e.message, "hint": e.hint, "at": time.time()})
        runs += 1
        if (max_runs is not None and runs >= max_runs) or wait(interval_s):
            return runs


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM (a cancelled console job, a stopped service) stops the process as Ctrl-C does: the step
    at work is recorded as interrupted, the locks go with the process, and the next run resumes it."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
