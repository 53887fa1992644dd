"""Run tracking against a real MLflow store in a temporary folder, read back as a user would (MlflowClient)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError, MissingDependencyError
from helpline.platform.settings import TrackingSettings, load_settings
from helpline.platform.tracking import (
    MlflowRun,
    NoopTracker,
    flatten_params,
    git_commit,
    lineage_runs,
    numeric,
    open_tracker,
)
from helpline.platform.workspace import Workspace


@pytest.fixture
def mlflow():
    return pytest.importorskip("mlflow")


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace.at(tmp_path / "ws").ensure()


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> TrackingSettings:
    """One SQLite store for the tests that need not start a new one (creating one runs MLflow's migrations)."""
    return TrackingSettings(uri=f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}")


def test_a_logged_run_reads_back_with_its_params_loss_curve_tags_and_report(mlflow, workspace: Workspace) -> None:
    tracker = open_tracker(TrackingSettings(), workspace)
    config = {"learning_rate": 0.01, "lora": {"r": 4, "targets": ["q_proj", "v_proj"]}}
    with tracker.start_run(kind="sft", name="tiny-run", params=config, tags={"helpline.dataset_hash": "feed"}) as run:
        for step, loss in enumerate([2.0, 1.5, 1.2], start=1):
            run.log_metrics({"loss": loss, "learning_rate": 0.01}, step=step)
        run.log_metrics({"best_eval_loss": 1.1, "best_checkpoint": "checkpoint-3"})
        run.log_dict({"global_step": 3, "artifact": Path("adapter")}, "training_summary.json")
        lineage = run.lineage()

    assert lineage is not None and lineage["tracking_uri"] == f"sqlite:///{workspace.root / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=lineage["tracking_uri"])
    got = client.get_run(lineage["run_id"])
    assert got.info.status == "FINISHED" and got.info.run_name == "tiny-run"
    assert got.data.params == {"learning_rate": "0.01", "lora.r": "4", "lora.targets": '["q_proj", "v_proj"]'}
    assert [(m.step, m.value) for m in client.get_metric_history(got.info.run_id, "loss")] == [(1, 2.0), (2, 1.5),
                                                                                                (3, 1.2)]  # fmt: skip
    assert got.data.metrics["best_eval_loss"] == 1.1 and "best_checkpoint" not in got.data.metrics
    assert got.data.tags["helpline.kind"] == "sft" and got.data.tags["helpline.dataset_hash"] == "feed"
    assert got.data.tags.get("mlflow.source.git.commit") == git_commit()
    assert lineage["open"].startswith(f"mlflow ui --backend-store-uri {lineage['tracking_uri']}")
    summary = Path(got.info.artifact_uri.removeprefix("file://")) / "training_summary.json"
    assert json.loads(summary.read_text()) == {"global_step": 3, "artifact": "adapter"}
    assert summary.is_relative_to(workspace.root), "artifacts stay in the workspace, never in ./mlruns"


def test_a_run_whose_work_fails_is_marked_failed_and_the_error_reaches_the_caller(
    mlflow, workspace: Workspace, shared_store: TrackingSettings
) -> None:
    tracker = open_tracker(shared_store, workspace)
    with pytest.raises(RuntimeError, match="out of memory"), tracker.start_run(kind="sft", name="oom") as run:
        raise RuntimeError("out of memory")
    lineage = run.lineage()
    assert lineage is not None
    client = mlflow.MlflowClient(tracking_uri=lineage["tracking_uri"])
    assert client.get_run(lineage["run_id"]).info.status == "FAILED"


def test_an_unreachable_tracking_server_leaves_the_work_untracked_with_a_warning(
    mlflow, workspace: Workspace, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = open_tracker(TrackingSettings(uri="http://127.0.0.1:9", timeout_s=2), workspace)
    done = []
    with caplog.at_level(logging.WARNING, "helpline.tracking"), tracker.start_run(kind="sft", name="x") as run:
        run.log_metrics({"loss": 1.0}, step=1)
        done.append("trained")
    assert done == ["trained"]
    lineage = run.lineage()
    assert lineage is not None and lineage["tracking_uri"] == "http://127.0.0.1:9" and "run_id" not in lineage
    assert "error" in lineage and "untracked" in caplog.text


def test_a_store_that_fails_mid_run_stops_tracking_once_and_the_work_goes_on(
    mlflow, workspace: Workspace, shared_store: TrackingSettings, caplog: pytest.LogCaptureFixture
) -> None:
    tracker = open_tracker(shared_store, workspace)
    with caplog.at_level(logging.WARNING, "helpline.tracking"), tracker.start_run(kind="sft", name="x") as run:
        run.log_metrics({"loss": 2.0}, step=1)
        assert isinstance(run, MlflowRun)
        run.client.log_batch = _raise  # the store goes away mid-run
        run.log_metrics({"loss": 1.0}, step=2)
        run.log_metrics({"loss": 0.5}, step=3)
    lineage = run.lineage()
    assert lineage is not None and "store gone" in lineage["error"] and lineage["run_id"]
    assert caplog.text.count("run tracking stopped") == 1


def _raise(*args: object, **kwargs: object) -> None:
    raise ConnectionError("store gone")


def test_tracking_switched_on_without_mlflow_names_the_extra_to_install(
    workspace: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    with pytest.raises(MissingDependencyError) as e:
        open_tracker(TrackingSettings(enabled=True), workspace)
    assert "helpline[track]" in (e.value.hint or "")
    assert isinstance(open_tracker(TrackingSettings(), workspace), NoopTracker), "unset: off when mlflow is missing"


def test_tracking_switched_off_tracks_nothing(workspace: Workspace) -> None:
    tracker = open_tracker(TrackingSettings(enabled=False), workspace)
    with tracker.start_run(kind="sft", name="x") as run:
        run.log_metrics({"loss": 1.0})
    assert isinstance(tracker, NoopTracker) and run.lineage() is None
    assert not (workspace.root / "mlflow.db").exists()


def test_tracking_settings_come_from_the_environment_and_a_folder_store_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HELPLINE_TRACKING__ENABLED", "false")
    monkeypatch.setenv("HELPLINE_TRACKING__EXPERIMENT", "support-bot")
    settings = load_settings(workspace=tmp_path)
    assert settings.tracking.enabled is False and settings.tracking.experiment == "support-bot"
    assert TrackingSettings().enabled is None and TrackingSettings().uri is None
    monkeypatch.setenv("HELPLINE_TRACKING__URI", "./mlruns")
    with pytest.raises(ConfigError, match="refuses a folder store"):
        load_settings(workspace=tmp_path)
    monkeypatch.delenv("HELPLINE_TRACKING__URI")
    monkeypatch.setenv("HELPLINE_TRACKING__URL", "http://mlflow:5000")
    with pytest.raises(ConfigError, match="HELPLINE_TRACKING__URL"):
        load_settings(workspace=tmp_path)


def test_reports_become_metrics_by_their_numbers_and_configs_become_flat_params() -> None:
    report = {"pass_rate": 0.5, "passed": True, "model": "x", "nan": float("nan"), "cases": [{"score": 1}],
              "categories": {"refund@x": {"n": 3}}}  # fmt: skip
    assert numeric(report) == {"pass_rate": 0.5, "passed": 1.0, "categories.refund_x.n": 3.0}
    assert numeric({f"m{i}": i for i in range(10)}, limit=3) == {"m0": 0.0, "m1": 1.0, "m2": 2.0}
    assert flatten_params({"a": {"b": None, "c": [1]}, "d": "text", "e": {}}) == {"a.b": "null", "a.c": "[1]",
                                                                                "d": "text", "e": "{}"}  # fmt: skip


def test_a_models_lineage_names_the_run_that_trained_it_and_the_gate_run() -> None:
    run = {"run_id": "r1", "tracking_uri": "sqlite:///x"}
    assert lineage_runs({"tracking": run, "gate": {"passed": True, "tracking": {"run_id": "g1"}}}) == {
        "training": run, "gate": {"run_id": "g1"}}  # fmt: skip
    assert lineage_runs({"training": {"tracking": run}}) == {"training": run}  # a full fine-tune's lineage
    assert lineage_runs({"gate": {"passed": False}}) == {}
