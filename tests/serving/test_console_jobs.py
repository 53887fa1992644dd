"""Console jobs: a job's environment holds none of the gateway's secrets; jobs are database records, so a replica
lists, follows and cancels another's jobs, a job outlives a gateway restart, a queued job waits for a runner, a
runner that stopped is noticed, and one job is run once however many runners look.

Jobs here run a tiny Python program in place of `helpline ...` (``job_argv`` is replaced, as in the UI's job tests).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from helpline.platform.workspace import Workspace
from helpline.serving.gateway import console_jobs
from helpline.serving.gateway.console_jobs import process_start
from helpline.serving.gateway.job_runner import STOPPED, JobRunner
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import Gateway, make_gateway, make_replica

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


def _ended(job: dict, timeout_s: float = GENEROUS_S) -> bool:
    """Whether the job's process (its pid with its start time) ended within ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while process_start(job["pid"]) == job["process_start"]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _kill(job: dict) -> None:
    if job.get("pid") and process_start(job["pid"]) == job["process_start"]:
        os.killpg(job["pid"], signal.SIGKILL)


def _restarted(gw: Gateway, tmp_path: Path, **kwargs: Any) -> TestClient:
    """Another gateway process over the same workspace: nothing shared with ``gw`` but the files and the database."""
    return make_replica(gw, store=GatewayStore(tmp_path / "gateway.sqlite"), **kwargs).client


def _runner(tmp_path: Path, argv: list[str], host: str | None = None) -> JobRunner:
    """A runner as `helpline worker` starts one, over its own connection to the database."""
    store = GatewayStore(tmp_path / "gateway.sqlite")
    return JobRunner(store, Workspace.at(tmp_path), host=host, argv=lambda command, args: argv)


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
    assert _ended(job)  # it ends unwatched: nobody asks this gateway
    restarted = _restarted(gw, tmp_path)
    listed = _call(restarted, gw, "GET", "/console/jobs").json()["jobs"]
    assert [(j["id"], j["status"], j["returncode"]) for j in listed] == [(job["id"], "succeeded", 0)]
    assert "done" in _call(restarted, gw, "GET", f"/console/jobs/{job['id']}").json()["log"]


def test_a_restarted_gateway_adopts_a_running_job_and_can_cancel_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: SLEEPER)
    gw = make_gateway(tmp_path)
    job = _start(gw.client, gw)
    try:
        restarted = _restarted(gw, tmp_path)
        listed = _call(restarted, gw, "GET", "/console/jobs").json()["jobs"]
        assert [(j["id"], j["status"]) for j in listed] == [(job["id"], "running")]
        refused = _call(restarted, gw, "POST", "/console/jobs", json={"command": "train sft"})
        assert refused.status_code == 409 and job["id"] in refused.text  # still one job at a time
        cancelled = _call(restarted, gw, "POST", f"/console/jobs/{job['id']}/cancel").json()
        assert cancelled["status"] == "failed" and cancelled["state"] == "cancelled" and cancelled["returncode"] != 0
        assert _ended(job)  # the job's process group was stopped
    finally:
        _kill(job)


def test_a_job_started_through_one_replica_is_listed_followed_and_cancelled_through_another_on_another_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(console_jobs, "job_argv", lambda command, args: SLEEPER)
    gw = make_gateway(tmp_path)
    replica = _restarted(gw, tmp_path)
    replica.app.state.job_runner.host = "replica-b-host"  # pids on A's host mean nothing to B
    assert _call(replica, gw, "GET", "/console/jobs").json()["jobs"] == []  # B has looked before A starts one
    with gw.client:  # A serves: its runner thread copies the output into the record and sees cancels
        job = _start(gw.client, gw)
        try:
            assert [j["id"] for j in _call(replica, gw, "GET", "/console/jobs").json()["jobs"]] == [job["id"]]
            followed = _wait_for(replica, gw, job["id"], "running")
            deadline = time.monotonic() + GENEROUS_S
            while "%" not in followed["log"] and time.monotonic() < deadline:
                followed = _call(replica, gw, "GET", f"/console/jobs/{job['id']}").json()
            assert followed["progress"] is not None and followed["host"] != "replica-b-host"
            refused = _call(replica, gw, "POST", "/console/jobs", json={"command": "train sft"})
            assert refused.status_code == 409 and job["id"] in refused.text
            asked = _call(replica, gw, "POST", f"/console/jobs/{job['id']}/cancel").json()
            assert asked["cancel_requested"] is True  # B flags it; A's runner stops it
            cancelled = _wait_for(replica, gw, job["id"], "failed")
            assert cancelled["state"] == "cancelled" and cancelled["returncode"] != 0
            assert _ended(job)
            assert _call(gw.client, gw, "GET", f"/console/jobs/{job['id']}").json()["state"] == "cancelled"
        finally:
            _kill(job)


def test_a_job_queued_while_no_runner_runs_is_run_when_a_worker_starts(tmp_path: Path) -> None:
    gw = make_gateway(tmp_path)
    external = _restarted(gw, tmp_path, job_runner="external")  # gateway.job_runner: external
    queued = _start(external, gw)
    time.sleep(0.3)
    assert _call(external, gw, "GET", f"/console/jobs/{queued['id']}").json()["status"] == "queued"
    worker = _runner(tmp_path, QUICK)
    worker.step()
    done = _wait_for(external, gw, queued["id"], "succeeded")
    assert done["returncode"] == 0 and "done" in done["log"]


def test_a_restarted_runner_marks_a_job_whose_process_is_gone_failed_and_leaves_another_hosts_alone(
    tmp_path: Path,
) -> None:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone_start = process_start(gone.pid)
    gone.wait()
    runner = _runner(tmp_path, QUICK, host="this-host")
    for job_id, host in (("elsewhere-job", "other-host"), ("here-job", "this-host")):
        row = {"id": job_id, "command": "train sft", "args": [], "actor": "t", "created_at": 1.0}
        assert store.queue_job(row) is None
        assert store.claim_job(job_id, host=host) == job_id
        store.job_started(job_id, pid=gone.pid, pid_start=gone_start, log_path=str(tmp_path / "nowhere.log"))
        runner.step()
        if host == "other-host":
            assert store.job(job_id)["state"] == "running"  # that host's runner decides
            store.end_job(job_id, state="succeeded", exit_code=0)
    assert (store.job("here-job")["state"], store.job("here-job")["reason"]) == ("failed", STOPPED)


def test_a_recorded_pid_now_used_by_another_process_is_not_adopted_nor_signalled(tmp_path: Path) -> None:
    """The pid is alive, but its start time is not the recorded one: another process that reused the pid."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        assert process_start(other.pid) is not None
        gw = make_gateway(tmp_path)
        job_id = "20240101-000000-abcdef"
        gw.store.queue_job({"id": job_id, "command": "train sft", "args": [], "actor": "t", "created_at": 0.0})
        gw.store.claim_job(job_id, host=gw.client.app.state.job_runner.host)
        gw.store.job_started(job_id, pid=other.pid, pid_start="an-earlier-boot:12345", log_path="")
        assert _call(gw.client, gw, "GET", f"/console/jobs/{job_id}").json()["status"] == "failed"
        assert _call(gw.client, gw, "POST", f"/console/jobs/{job_id}/cancel").status_code == 409
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _claim(runner: JobRunner, ready: threading.Barrier, claimed: list[str | None]) -> None:
    ready.wait()  # both runners look at once
    claimed.append(runner.run_queued())


def test_two_runners_never_both_claim_one_job(tmp_path: Path) -> None:
    store = GatewayStore(tmp_path / "gateway.sqlite")
    for round_ in range(5):
        job_id = f"job-{round_}"
        store.queue_job({"id": job_id, "command": "train sft", "args": [], "actor": "t", "created_at": float(round_)})
        runners = [_runner(tmp_path, QUICK, host=f"host-{i}") for i in range(2)]
        ready, claimed = threading.Barrier(2), []
        threads = [threading.Thread(target=_claim, args=(r, ready, claimed)) for r in runners]
        for t in threads:
            t.start()
        for t in threads:
            t.join(GENEROUS_S)
        assert sorted(claimed, key=str) == [None, job_id]  # one runner took it, the other found it taken
        winner = runners[[r.host for r in runners].index(store.job(job_id)["host"])]
        deadline = time.monotonic() + GENEROUS_S
        while store.job(job_id)["state"] == "running" and time.monotonic() < deadline:
            winner.watch()
            time.sleep(0.05)
        assert store.job(job_id)["state"] == "succeeded"
