"""Run tracking: each training and evaluation run logged to MLflow (params, metrics, tags, a JSON report).

Recipes and evaluation commands ask ``ctx.tracker`` for a run; the registry's lineage keeps what
:meth:`TrackedRun.lineage` returns (run id, experiment, store URI and the command that opens it).

The store. MLflow 3 refuses a plain folder store (``./mlruns`` is "in maintenance mode" and raises unless
``MLFLOW_ALLOW_FILE_STORE=true``), so the default is the SQLite store ``sqlite:///<workspace>/mlflow.db``,
with artifacts in ``<workspace>/mlartifacts``. mlflow-skinny writes it through SQLAlchemy and alembic (the
``track`` extra pins all three); skinny has no UI server, which full ``mlflow`` of the same version adds.

When tracking fails. A training run is worth more than its log: a store that cannot be reached when the
run starts, or fails during it, never stops the work. A warning is logged once, the run goes on untracked
from there, and its lineage records the error instead of a run id. A tracking server is probed first, with a
short timeout, and MLflow's own HTTP retries (7, with backoff: minutes) are shortened unless set.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

from helpline.platform.errors import MissingDependencyError
from helpline.platform.lazy_imports import require
from helpline.platform.settings import TrackingSettings
from helpline.platform.workspace import Workspace

log = logging.getLogger("helpline.tracking")

_KEY = re.compile(r"[^\w./\- :]")  # what MLflow accepts in a param, metric or tag key
_MAX_KEY, _MAX_PARAM, _MAX_TAG = 250, 6000, 8000  # MLflow's limits (longer values are cut)
_MAX_METRICS = 500  # figures logged from one report (per-case lists are never flattened into metrics)


class TrackedRun(Protocol):
    """One tracked run, open while its ``start_run`` block runs."""

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        """Log the numeric values of ``metrics`` (others, None and NaN are skipped) at ``step``."""
        ...

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        """Store ``data`` as the JSON artifact ``name`` (a config, a summary, a report)."""
        ...

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Set tags on the run (None values are skipped)."""
        ...

    def lineage(self) -> dict[str, Any] | None:
        """What the registry records of the run (run id, store, how to open it); None when nothing is tracked."""
        ...


class Tracker(Protocol):
    """Where runs are logged: MLflow, or nowhere."""

    def start_run(
        self, *, kind: str, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> AbstractContextManager[TrackedRun]:
        """A run of ``kind`` (sft, preference, detector, gate, eval-regression, ...) named ``name``, with its
        config as ``params``; it ends when the block does (FAILED if the block raises)."""
        ...


class NoopRun:
    """A run that records nothing."""

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        pass

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        pass

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        pass

    def lineage(self) -> dict[str, Any] | None:
        return None


class NoopTracker:
    """Tracking off: runs record nothing and cost nothing."""

    @contextmanager
    def start_run(
        self, *, kind: str, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        yield NoopRun()


class UntrackedRun(NoopRun):
    """A run whose store failed: it records nothing more, and its lineage says why."""

    def __init__(self, uri: str, error: str) -> None:
        self.uri, self.error = uri, error

    def lineage(self) -> dict[str, Any] | None:
        return {"tracking_uri": self.uri, "error": self.error}


class MlflowRun:
    """A run in an MLflow store. The first call that fails turns it into an untracked run (see the module)."""

    def __init__(self, client: Any, run_id: str, *, experiment: str, experiment_id: str, uri: str) -> None:
        self.client, self.run_id, self.uri = client, run_id, uri
        self.experiment, self.experiment_id = experiment, experiment_id
        self.error: str | None = None

    def log_metrics(self, metrics: Mapping[str, Any], *, step: int | None = None) -> None:
        entities = require("mlflow.entities", "track")
        now = int(time.time() * 1000)
        batch = [entities.Metric(k, v, now, step or 0) for k, v in numeric(metrics).items()]
        for i in range(0, len(batch), 1000):
            self._call("log metrics", self.client.log_batch, self.run_id, metrics=batch[i : i + 1000])

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        plain = json.loads(json.dumps(data, default=str))  # paths, dates and the like as strings
        self._call("store " + name, self.client.log_dict, self.run_id, plain, name)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        entities = require("mlflow.entities", "track")
        batch = [entities.RunTag(_key(k), str(v)[:_MAX_TAG]) for k, v in tags.items() if v is not None]
        self._call("set tags", self.client.log_batch, self.run_id, tags=batch)

    def lineage(self) -> dict[str, Any] | None:
        if self.error is not None:
            return {"tracking_uri": self.uri, "run_id": self.run_id, "error": self.error}
        return {
            "run_id": self.run_id,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "tracking_uri": self.uri,
            "open": open_command(self.uri, self.experiment_id, self.run_id),
        }

    def end(self, status: str) -> None:
        # MLflow prints the run's link on stdout when a server's run ends; stdout is a `--json` command's answer
        with contextlib.redirect_stdout(sys.stderr):
            self._call("end the run", self.client.set_terminated, self.run_id, status)

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.error is not None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # any store failure: the work goes on untracked (module docstring)
            self.error = f"{what}: {type(e).__name__}: {e}"[:500]
            log.warning("run tracking stopped, the run goes on untracked (%s at %s)", self.error, self.uri)


class MlflowTracker:
    """Runs logged to the MLflow store at ``uri``, in ``experiment`` (created on first use, its artifacts in
    ``artifact_location`` when given)."""

    def __init__(
        self, uri: str, experiment: str, *, artifact_location: str | None = None, probe_timeout_s: float = 5.0
    ) -> None:
        self.uri, self.experiment, self.artifact_location = uri, experiment, artifact_location
        self.probe_timeout_s = probe_timeout_s
        require("mlflow", "track")  # missing: refused before any work starts, naming the extra

    @contextmanager
    def start_run(
        self, *, kind: str, name: str, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None
    ) -> Iterator[TrackedRun]:
        try:
            run = self._create(kind, name, params or {}, tags or {})
        except Exception as e:  # an unreachable or broken store must not stop the work
            error = f"{type(e).__name__}: {e}"[:500]
            log.warning("run tracking is unavailable, the run goes on untracked (%s at %s)", error, self.uri)
            yield UntrackedRun(self.uri, error)
            return
        status = "FAILED"
        try:
            yield run
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        finally:
            run.end(status)

    def _create(self, kind: str, name: str, params: Mapping[str, Any], tags: Mapping[str, Any]) -> MlflowRun:
        mlflow = require("mlflow", "track")
        entities = require("mlflow.entities", "track")
        if self.uri.startswith(("http://", "https://")):
            _probe(self.uri, self.probe_timeout_s)
        client = mlflow.MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(self.experiment)
        experiment_id = found.experiment_id if found else self._new_experiment(client)
        all_tags = {"helpline.kind": kind, "mlflow.source.git.commit": git_commit(), **tags}
        run_tags = {_key(k): str(v)[:_MAX_TAG] for k, v in all_tags.items() if v is not None}
        created = client.create_run(experiment_id, run_name=name, tags=run_tags)
        run = MlflowRun(client, created.info.run_id, experiment=self.experiment, experiment_id=experiment_id,
                        uri=self.uri)  # fmt: skip
        flat = [entities.Param(_key(k), v[:_MAX_PARAM]) for k, v in flatten_params(params).items()]
        for i in range(0, len(flat), 100):  # MLflow takes at most 100 params a batch
            run._call("log params", client.log_batch, run.run_id, params=flat[i : i + 100])
        return run

    def _new_experiment(self, client: Any) -> str:
        try:
            return client.create_experiment(self.experiment, artifact_location=self.artifact_location)
        except Exception:
            found = client.get_experiment_by_name(self.experiment)  # created meanwhile by another run
            if found is None:
                raise
            return found.experiment_id


def open_tracker(settings: TrackingSettings, workspace: Workspace) -> Tracker:
    """The tracker the settings ask for: off, MLflow at ``uri``, or (``enabled`` unset) MLflow when installed."""
    installed = importlib.util.find_spec("mlflow") is not None
    if settings.enabled is False or (settings.enabled is None and not installed):
        return NoopTracker()
    if not installed:
        raise MissingDependencyError(
            "run tracking is on (tracking.enabled=true) but mlflow is not installed",
            hint="pip install 'helpline[track]', or set tracking.enabled=false (HELPLINE_TRACKING__ENABLED=false)",
        )
    uri, artifacts = settings.uri, None
    if uri is None:
        uri = f"sqlite:///{workspace.root / 'mlflow.db'}"
        artifacts = (workspace.root / "mlartifacts").as_uri()
    if uri.startswith(("http://", "https://")):  # bounded waits on a server that went away (module docstring)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(int(settings.timeout_s)))
    return MlflowTracker(uri, settings.experiment, artifact_location=artifacts, probe_timeout_s=settings.timeout_s)


def open_command(uri: str, experiment_id: str, run_id: str) -> str:
    """How a user opens the run: the server's page, or the UI over the local store."""
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return f"mlflow ui --backend-store-uri {uri}  (experiment {experiment_id}, run {run_id})"


def numeric(figures: Mapping[str, Any], *, limit: int = _MAX_METRICS) -> dict[str, float]:
    """The finite numbers of a (nested) report as ``a.b.c`` metric keys, the first ``limit`` of them; lists are
    skipped (a report's per-case rows are its artifact, not metrics)."""
    return dict(list(_numbers(figures, "").items())[:limit])


def _numbers(figures: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in figures.items():
        name = _key(f"{prefix}{key}")
        if isinstance(value, Mapping):
            out |= _numbers(value, f"{name}.")
        elif isinstance(value, int | float) and math.isfinite(value):  # bool is an int: a verdict becomes 0 or 1
            out[name] = float(value)
    return out


def flatten_params(config: Mapping[str, Any], *, prefix: str = "") -> dict[str, str]:
    """A (nested) config as ``a.b`` params; lists and other values as JSON text."""
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out |= flatten_params(value, prefix=f"{prefix}{key}.")
        else:
            out[_key(f"{prefix}{key}")] = value if isinstance(value, str) else json.dumps(value, default=str)
    return out


def _key(name: str) -> str:
    return _KEY.sub("_", str(name))[:_MAX_KEY]


def _probe(uri: str, timeout_s: float) -> None:
    """Raise unless the tracking server answers its health check within ``timeout_s``."""
    with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout_s) as response:
        response.read()


@functools.cache
def git_commit() -> str | None:
    """The commit of helpline's source when it runs from a git checkout, else None."""
    source = Path(__file__).resolve().parents[2]
    if not (source / ".git").exists():
        return None
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True)  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def track_report(tracked: TrackedRun, report: Mapping[str, Any], name: str = "report.json") -> None:
    """Log a finished evaluation: its figures as metrics (:func:`numeric`), the whole report as JSON ``name``."""
    tracked.log_metrics(report)
    tracked.log_dict(report, name)


def lineage_runs(metadata: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The tracked runs a registered model's lineage names: ``training`` (the run that produced it: an adapter's
    lineage, or a full fine-tune's ``training``) and ``gate`` (the gate verdict stored on it)."""
    training = metadata.get("tracking") or (metadata.get("training") or {}).get("tracking")
    gate = (metadata.get("gate") or {}).get("tracking")
    return {what: run for what, run in (("training", training), ("gate", gate)) if run}
