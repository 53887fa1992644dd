"""`helpline worker`: a job queued in the gateway's database while no runner ran is run by the worker when it starts,
its output copied into the job's record (what a gateway on another host shows)."""

from __future__ import annotations

from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import GatewayStore


def test_the_worker_runs_a_job_queued_before_it_started_and_records_its_output(workspace: Workspace) -> None:
    store = GatewayStore(gateway_db(workspace))
    row = {"id": "queued-job", "command": "train sft", "args": ["--help-config"], "actor": "t", "created_at": 1.0}
    assert store.queue_job(row) is None
    result = CliRunner().invoke(app, ["worker", "--once", "--every", "0.2"])
    assert result.exit_code == 0, result.output
    job = store.job("queued-job")
    assert (job["state"], job["exit_code"]) == ("succeeded", 0)
    assert "learning_rate" in job["log_tail"]  # `train sft --help-config` lists the config fields
