"""A Trainer callback that appends every log event to metrics.jsonl and echoes it on the terminal."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback


class MetricsFile(TrainerCallback):
    """Append ``{"step", "time", ...logs}`` lines; print a one-line summary per event."""

    def __init__(self, path: Path, *, console=None) -> None:
        self.path = path
        self.console = console

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, "time": time.time(), **logs}
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.console is not None:
            shown = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in logs.items())
            self.console.print(f"[dim]step {state.global_step}/{state.max_steps}[/] {shown}", highlight=False)


class ResumeWithNewCallbacks(TrainerCallback):
    """Let a resumed run add a stateful callback (e.g. early stopping) that the checkpoint's run lacked.

    transformers writes each stateful callback's state into ``state.stateful_callbacks[name]`` when it
    saves a checkpoint, and raises ``KeyError`` there when the state loaded from the checkpoint has no
    entry for that name. Seeding an empty entry at train start avoids that; it restores nothing.
    """

    def __init__(self, callbacks: list) -> None:
        from transformers.trainer_callback import ExportableState

        self.names = ["TrainerControl", *(type(c).__name__ for c in callbacks if isinstance(c, ExportableState))]

    def on_train_begin(self, args, state, control, **kwargs):
        for name in self.names:
            state.stateful_callbacks.setdefault(name, {})
