"""Trainer callbacks: every log event appended to metrics.jsonl (and echoed) and logged to the tracked run, and
the resume fix-up.

They subclass transformers' ``TrainerCallback``, so the classes are made on first use: importing this
module loads no transformers (``helpline --help`` stays fast).
"""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from helpline.platform.lazy_imports import require


def metrics_file(path: Path, *, console: Any = None) -> Any:
    """Append ``{"step", "time", ...logs}`` lines to ``path``; print a one-line summary per event."""
    return _classes()["MetricsFile"](path, console=console)


def tracking(run: Any) -> Any:
    """Log every numeric figure of each log event (loss, learning rate, eval loss, ...) to ``run`` (a
    :class:`helpline.platform.tracking.TrackedRun`) at its step: the loss curve in MLflow."""
    return _classes()["Tracking"](run)


def resume_with_new_callbacks(callbacks: list) -> Any:
    """Let a resumed run add a stateful callback (e.g. early stopping) that the checkpoint's run lacked.

    transformers writes each stateful callback's state into ``state.stateful_callbacks[name]`` when it
    saves a checkpoint, and raises ``KeyError`` there when the state loaded from the checkpoint has no
    entry for that name. Seeding an empty entry at train start avoids that; it restores nothing.
    """
    return _classes()["ResumeWithNewCallbacks"](callbacks)


@functools.cache
def _classes() -> dict[str, type]:
    transformers = require("transformers", "train")
    exportable = require("transformers.trainer_callback", "train").ExportableState

    class MetricsFile(transformers.TrainerCallback):
        def __init__(self, path: Path, *, console: Any = None) -> None:
            self.path = path
            self.console = console

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if not logs:
                return
            record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")
            if self.console is not None:
                shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
                self.console.print(f"[dim]step {state.global_step}/{state.max_steps}[/] {shown}", highlight=False)

    class Tracking(transformers.TrainerCallback):
        def __init__(self, run: Any) -> None:
            self.run = run

        def on_log(self, args, state, control, logs=None, **kwargs):  # type: ignore[no-untyped-def]
            if logs:
                self.run.log_metrics({**logs, "epoch": state.epoch}, step=state.global_step)

    class ResumeWithNewCallbacks(transformers.TrainerCallback):
        def __init__(self, callbacks: list) -> None:
            self.names = ["TrainerControl", *(type(c).__name__ for c in callbacks if isinstance(c, exportable))]

        def on_train_begin(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            for name in self.names:
                state.stateful_callbacks.setdefault(name, {})

    return {"MetricsFile": MetricsFile, "Tracking": Tracking, "ResumeWithNewCallbacks": ResumeWithNewCallbacks}
