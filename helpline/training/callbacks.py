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
