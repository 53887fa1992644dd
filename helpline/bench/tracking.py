"""What run tracking adds to one run: ``python -m helpline.bench.tracking [--runs N] [--steps S]`` prints JSON.

Three parts, each timed ``N`` times (medians reported): importing mlflow in a fresh interpreter (once per process,
when its first run starts); a workspace's first run, which creates the SQLite store (MLflow's migrations); and a
later run in that store. A run logs what a training run logs: a 40-key config, ``S`` steps of loss, learning rate
and gradient norm, six final figures and a summary artifact. Tracking off costs nothing to time (a no-op).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from helpline.platform.lazy_imports import require
from helpline.platform.settings import TrackingSettings
from helpline.platform.tracking import open_tracker
from helpline.platform.workspace import Workspace

_IMPORT = "import time; t = time.perf_counter(); import mlflow, mlflow.entities; print(time.perf_counter() - t)"


def one_run(workspace: Path, *, steps: int) -> float:
    """Seconds for one tracked run shaped like a training run's, in ``workspace``'s default store."""
    started = time.perf_counter()
    tracker = open_tracker(TrackingSettings(enabled=True), Workspace.at(workspace).ensure())
    with tracker.start_run(kind="bench", name="tracking-bench", params={f"p{i}": i for i in range(40)}) as run:
        for step in range(1, steps + 1):
            run.log_metrics({"loss": 1 / step, "learning_rate": 1e-4, "grad_norm": 0.5}, step=step)
        run.log_metrics({f"figure_{i}": float(i) for i in range(6)})
        run.log_dict({"summary": list(range(100))}, "training_summary.json")
    return time.perf_counter() - started


def measure(runs: int = 5, steps: int = 20) -> dict[str, Any]:
    """Medians (and ranges) of the three parts, each timed ``runs`` times."""
    require("mlflow", "track")
    imports = [float(subprocess.run([sys.executable, "-c", _IMPORT], capture_output=True, text=True,
                                    check=True).stdout) for _ in range(runs)]  # fmt: skip
    first, later = [], []
    with tempfile.TemporaryDirectory(prefix="helpline-tracking-bench-") as tmp:
        for i in range(runs):
            workspace = Path(tmp) / f"ws{i}"
            first.append(one_run(workspace, steps=steps))
            later.append(one_run(workspace, steps=steps))
    parts = {"import_mlflow_s": imports, "first_run_in_a_workspace_s": first, "later_run_s": later}
    return {
        "runs": runs,
        "steps_logged_per_run": steps,
        **{k: {"median": round(statistics.median(v), 2), "min": round(min(v), 2), "max": round(max(v), 2)}
           for k, v in parts.items()},
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="How many times each part is timed.")
    parser.add_argument("--steps", type=int, default=20, help="Logged steps per run.")
    args = parser.parse_args()
    print(json.dumps(measure(args.runs, args.steps), indent=2))
