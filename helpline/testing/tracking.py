"""A run tracker that remembers what it was asked, for tests of the code that tracks runs."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from helpline.platform.tracking import flatten_params, numeric


@dataclass
class RecordedRun:
    """One run as :class:`RecordingTracker` saw it: metrics as ``(key, value, step)``, artifacts by name."""

    run_id: str
    kind: str
    name: str
    params: dict[str, str]
    tags: dict[str, str]
    metrics: list[tuple[str, float, int]] = field(default_factory=list)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    status: str = "RUNNING"

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        self.metrics += [(k, v, step or 0) for k, v in numeric(metrics).items()]

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.artifacts[name] = dict(data)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self.tags |= {k: str(v) for k, v in tags.items() if v is not None}

    def lineage(self) -> dict[str, Any] | None:
        return {"run_id": self.run_id, "experiment": "test", "experiment_id": "0", "tracking_uri": "memory://",
                "open": f"memory://{self.run_id}"}  # fmt: skip

    def history(self, key: str) -> list[tuple[int, float]]:
        """``(step, value)`` of every value logged under ``key``, in order."""
        return [(step, value) for k, value, step in self.metrics if k == key]


class RecordingTracker:
    """Keeps every run in ``runs``, ids ``run-1``, ``run-2``, ... in the order they started."""

    def __init__(self) -> None:
        self.runs: list[RecordedRun] = []

    @contextmanager
    def start_run(
        self, *, kind: str, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[RecordedRun]:
        given = {k: str(v) for k, v in (tags or {}).items() if v is not None}
        run = RecordedRun(f"run-{len(self.runs) + 1}", kind, name, flatten_params(params or {}),
                          {"helpline.kind": kind, **given})  # fmt: skip
        self.runs.append(run)
        try:
            yield run
        except BaseException:
            run.status = "FAILED"
            raise
        run.status = "FINISHED"
