"""The Tracker contract (helpline/platform/tracking.py).

What recipes and evaluation commands rely on: the work inside a run's block runs and its result is kept;
an error in the block still reaches the caller (the run is ended, never swallowed); logging odd values
(text, None, NaN, nested reports) never raises; a run's lineage is None or JSON data naming the run.

Runs against the no-op tracker, the recording fake, and MLflow over a SQLite store in a temporary folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.tracking import MlflowTracker, NoopTracker, Tracker
from helpline.testing.tracking import RecordingTracker


class TrackerContract:
    """What every tracker must do; subclass and override the ``tracker`` fixture."""

    @pytest.fixture
    def tracker(self) -> Tracker:
        raise NotImplementedError("override the `tracker` fixture")

    def test_the_work_inside_a_run_runs_and_its_lineage_is_json_data(self, tracker: Tracker) -> None:
        done = []
        with tracker.start_run(kind="sft", name="tiny", params={"lr": 0.1, "nested": {"r": 4}}) as run:
            done.append(1)
            run.log_metrics({"loss": 1.5}, step=1)
            lineage = run.lineage()
        assert done == [1]
        assert lineage is None or json.loads(json.dumps(lineage)) == lineage

    def test_an_error_in_the_block_reaches_the_caller(self, tracker: Tracker) -> None:
        with pytest.raises(ZeroDivisionError), tracker.start_run(kind="sft", name="broken"):
            _ = 1 / 0

    def test_odd_values_and_nested_reports_never_raise(self, tracker: Tracker) -> None:
        with tracker.start_run(kind="eval-regression", name="odd", params={"path": Path("x"), "none": None}) as run:
            run.log_metrics({"text": "x", "none": None, "nan": float("nan"), "ok": True, "deep": {"a": {"b": 2}}})
            run.log_dict({"path": Path("x"), "rows": [1, 2]}, "report.json")
            run.set_tags({"helpline.dataset_hash": "abc", "missing": None})


class TestNoopTracker(TrackerContract):
    @pytest.fixture
    def tracker(self) -> Tracker:
        return NoopTracker()


class TestRecordingTracker(TrackerContract):
    @pytest.fixture
    def tracker(self) -> Tracker:
        return RecordingTracker()


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SQLite store for the module's tests: creating one runs MLflow's migrations (a second or more)."""
    pytest.importorskip("mlflow")
    return tmp_path_factory.mktemp("mlflow")


class TestMlflowTracker(TrackerContract):
    @pytest.fixture
    def tracker(self, mlflow_store: Path) -> Tracker:
        return MlflowTracker(f"sqlite:///{mlflow_store / 'mlflow.db'}", "test", artifact_location=mlflow_store.as_uri())
