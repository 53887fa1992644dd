"""Console jobs: a job's environment holds none of the gateway's secrets, and jobs outlive a gateway restart.

Jobs here run a tiny Python program in place of `helpline ...` (``job_argv`` is replaced, as in the UI's job tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpline.answering.rag import RAGPipeline
from helpline.serving.gateway import console_jobs
from helpline.serving.gateway.app import create_app
from helpline.serving.gateway.console_jobs import process_start
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.routing import ModelRouter
from helpline.testing import FakeGenerator
from helpline.testing.serving import FakeBackend, Gateway, make_gateway

GENEROUS_S = 60  # passing runs take a second or two
PRINT_ENV = [sys.executable, "-c", "import json, os; print(json.dumps(dict(os.environ)))"]
SLEEPER = [sys.executable, "-c", "import time\nfor i in range(600):\n    print(f'{i}%', flush=True); time.sleep(0.1)"]
QUICK = [sys.executable, "-c", "print('done')"]


def _call(client: TestClient, gw: Gateway, method: str, path: str, **kwargs: Any) -> Any:
    return client.request(method, path, headers=gw.headers("engineer"), **kwargs)


def _start(client: TestClient, gw: Gateway) -> dict:
    r = _call(client, gw, "POST", "/console/jobs", json={"command": "train sft"})
    assert r.status_code == 200, r.text
    return r.json()


def _wait_for(client: TestClient, gw: Gateway, job_id: str, status: str) -> dict:
    deadline = time.monotonic() + GENEROUS_S
    while time.monotonic() < deadline:
        job = _call(client, gw, "GET", f"/console/jobs/{job_id}").json()
        if job["status"] == status:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached {status}: {job}")


def _restarted(gw: Gateway, tmp_path: Path) -> TestClient:
    """A new gateway process over the same workspace: nothing shared with ``gw`` but the files."""
    pipeline = RAGPipeline(search=lambda q, k, role, history=None: [], generator=FakeGenerator())
    router = ModelRouter(gw.registry, FakeBackend())
    return TestClient(create_app(pipeline=pipeline, router=router, store=GatewayStore(tmp_path / "gateway.sqlite")))


def test_a_jobs_environment_holds_no_gateway_secret_but_the_workspace_teacher_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "planted-aws-secret")
    monkeypatch.setenv("HELPLINE_ADMIN_TOKEN", "planted-admin-token")  # HELPLINE_ but not a setting
    monkeypatch.setenv("HELPLINE_TEACHER__BASE_URL", "https://teacher.example/v1")
    monkeypatch.setenv("HELPLINE_TEACHER__API_KEY_ENV", "JOBTEST_TEACHER_KEY")
    monkeypatch.setenv("JOBTEST_TEACHER_KEY", "teacher-key")
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: PRINT_ENV)
    gw = make_gateway(tmp_path)
    done = _wait_for(gw.client, gw, _start(gw.client, gw)["id"], "succeeded")
    env = json.loads(done["log"].strip().splitlines()[-1])
    assert "planted" not in done["log"]
    assert "AWS_SECRET_ACCESS_KEY" not in env and "HELPLINE_ADMIN_TOKEN" not in env
    assert env["JOBTEST_TEACHER_KEY"] == "teacher-key"  # the one secret a job may use, for its own endpoint
    assert env["HELPLINE_TEACHER__BASE_URL"] == "https://teacher.example/v1"  # settings pass
    assert env["HELPLINE_WORKSPACE"] == str(tmp_path) and env["PATH"]


def test_a_restarted_gateway_lists_a_finished_job_with_its_outcome(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: QUICK)
    gw = make_gateway(tmp_path)
    job = _start(gw.client, gw)
    gw.client.app.state.console_jobs[job["id"]].wait(GENEROUS_S)  # it ends unwatched: nobody asks this gateway
    restarted = _restarted(gw, tmp_path)
    listed = _call(restarted, gw, "GET", "/console/jobs").json()["jobs"]
    assert [(j["id"], j["status"], j["returncode"]) for j in listed] == [(job["id"], "succeeded", 0)]


def test_a_restarted_gateway_adopts_a_running_job_and_can_cancel_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: SLEEPER)
    gw = make_gateway(tmp_path)
    job = _start(gw.client, gw)
    process = gw.client.app.state.console_jobs[job["id"]]
    try:
        restarted = _restarted(gw, tmp_path)
        listed = _call(restarted, gw, "GET", "/console/jobs").json()["jobs"]
        assert [(j["id"], j["status"]) for j in listed] == [(job["id"], "running")]
        refused = _call(restarted, gw, "POST", "/console/jobs", json={"command": "train sft"})
        assert refused.status_code == 409 and job["id"] in refused.text  # still one job at a time
        cancelled = _call(restarted, gw, "POST", f"/console/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "failed" and cancelled["returncode"] != 0
        assert process.wait(GENEROUS_S) != 0  # the job's process group was stopped
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_job_started_on_one_replica_is_running_and_cancellable_on_another_that_was_already_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: SLEEPER)
    gw = make_gateway(tmp_path)
    replica = _restarted(gw, tmp_path)
    assert _call(replica, gw, "GET", "/console/jobs").json()["jobs"] == []  # B has looked before A starts one
    job = _start(gw.client, gw)
    process = gw.client.app.state.console_jobs[job["id"]]
    try:
        assert _call(replica, gw, "GET", f"/console/jobs/{job['id']}").json()["status"] == "running"
        refused = _call(replica, gw, "POST", "/console/jobs", json={"command": "train sft"})
        assert refused.status_code == 409 and job["id"] in refused.text
        cancelled = _call(replica, gw, "POST", f"/console/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "failed"
        assert process.wait(GENEROUS_S) != 0
        assert _call(gw.client, gw, "GET", f"/console/jobs/{job['id']}").json()["status"] == "failed"  # A sees it
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_recorded_pid_now_used_by_another_process_is_not_adopted_nor_signalled(tmp_path: Path) -> None:
    """The pid is alive, but its start time is not the recorded one: another process that reused the pid."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        assert process_start(other.pid) is not None
        folder = tmp_path / "logs" / "jobs" / "20240101-000000-abcdef"
        folder.mkdir(parents=True)
        (folder / "output.log").write_text("")
        meta = {"id": folder.name, "command": "train sft", "args": [], "argv": [], "actor": "engineer:1:x",
                "started_at": 0.0, "returncode": None, "finished_at": None, "pid": other.pid,
                "process_start": "an-earlier-boot:12345"}  # fmt: skip
        (folder / "job.json").write_text(json.dumps(meta))
        gw = make_gateway(tmp_path)
        assert _call(gw.client, gw, "GET", f"/console/jobs/{folder.name}").json()["status"] == "lost"
        assert _call(gw.client, gw, "POST", f"/console/jobs/{folder.name}/cancel").status_code == 409
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()
