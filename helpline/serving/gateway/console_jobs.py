"""Console routes for engineers' jobs: run `helpline data|train|eval|bench ...` as a subprocess, one at a time, and
follow its progress and log (split from console_router by role).

A job is a record in the gateway's database (``store_jobs``), so every replica, on any host, lists, follows and
cancels the same jobs, and a restart loses none. Starting one queues it (refused while another is queued or
running, checked and written in one transaction); a runner (``job_runner``) claims it, runs it on its host and
records its output's tail and its end. With ``gateway.job_runner: embedded`` (the default) every gateway runs one:
the gateway that queued a job starts it at once, and a thread started with the app claims jobs queued elsewhere and
watches the running ones; with ``external``, `helpline worker` runs them on a host of its own. A cancel flags the
job, and when it runs on this host, stops its process group at once as before; otherwise its runner stops it
within a second or so. A job's log is read from its file when that is on this host, else from its record's tail.

A job gets a scrubbed environment (``job_env``): what programs need, helpline's settings and the workspace's
teacher key, none of the gateway's other secrets, which a job's arguments could otherwise send anywhere.

Jobs recorded on disk by releases before the database held them (``logs/jobs/*/job.json``) are not listed; their
logs stay where they are.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import time
import uuid
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.workspace import Workspace
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.console_router import JOB_GROUPS, Conflict
from helpline.serving.gateway.job_runner import JobRunner, job_argv, job_env, process_start, read_tail
from helpline.serving.gateway.store import GatewayStore
from helpline.serving.gateway.store_jobs import ACTIVE

__all__ = ["JobRequest", "console_jobs", "job_argv", "job_env", "process_start", "runner_for"]

console_jobs = APIRouter(prefix="/console", tags=["console"])
_PERCENT = re.compile(r"(\d{1,3})%")
#: How a job's state reads in the API (``status``, as before jobs were records: a cancelled job has failed).
_STATUS = {state: state for state in ("queued", "running", "succeeded", "failed")} | {"cancelled": "failed"}


class JobRequest(BaseModel):
    command: str = Field(description="A `helpline` command, e.g. 'train sft' or 'eval retrieval'.")
    args: list[str] = Field(default_factory=list, max_length=64, description="Its arguments, one per item.")


def runner_for(store: GatewayStore, workspace: Workspace) -> JobRunner:
    """The gateway's runner; its command line is this module's ``job_argv``, looked up when a job starts."""
    return JobRunner(store, workspace, argv=lambda command, args: job_argv(command, args))


def _runner(request: Request) -> JobRunner:
    """The app's runner, having looked at this host's running jobs (outputs, cancels, ends) so what is read is new."""
    runner: JobRunner = request.app.state.job_runner
    runner.watch()
    return runner


# jobs ----------------------------------------------------------------------------------------


@console_jobs.get("/jobs/commands")
def job_commands(_: Principal = Depends(requires("engineer"))) -> dict:
    return {"commands": _job_commands()}


@functools.lru_cache(maxsize=1)
def _job_commands() -> list[str]:
    """`helpline` commands of the data/train/eval/bench groups, asked of the `helpline` program that
    jobs run (once per process, about half a second): the gateway treats the CLI as the program it
    starts, and does not import it (the CLI sits above every layer)."""
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "commands", *JOB_GROUPS],
        capture_output=True, text=True, timeout=120, check=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return json.loads(out.stdout)


@console_jobs.post("/jobs")
def start_job(body: JobRequest, request: Request, who: Principal = Depends(requires("engineer"))) -> dict:
    """Queue `helpline COMMAND ARGS...` (one job at a time: the machine's cores are shared with serving); an
    embedded runner starts it at once. Follow it with GET /console/jobs/{id}."""
    if body.command not in _job_commands():
        raise ConfigError(f"{body.command!r} cannot be run as a job", hint="GET /console/jobs/commands lists them")
    if any(len(a) > 1000 for a in body.args):
        raise ConfigError("an argument is longer than 1000 characters")
    runner, store = _runner(request), request.app.state.store
    job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    row = {"id": job_id, "command": body.command, "args": body.args, "actor": who.actor, "created_at": time.time()}
    active = store.queue_job(row)
    if active is not None:
        raise Conflict(f"job {active} is still running", hint="wait for it or cancel it first")
    store.audit(who.actor, "job.start", job_id, {"command": body.command, "args": body.args})
    if request.app.state.job_runner_embedded:
        runner.run_queued(job_id)
    return _view(store.job(job_id), tail=0)


@console_jobs.get("/jobs")
def jobs(request: Request, _: Principal = Depends(requires("engineer"))) -> dict:
    _runner(request)
    return {"jobs": [_view(j, tail=0) for j in request.app.state.store.jobs(limit=50)]}


@console_jobs.get("/jobs/{job_id}")
def job(
    job_id: str, request: Request, tail: int = Query(200, ge=0, le=5000), _: Principal = Depends(requires("engineer"))
) -> dict:
    """A job's status, progress (the last percentage its output printed) and the tail of its log."""
    _runner(request)
    return _view(_job(request, job_id), tail=tail)


@console_jobs.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, who: Principal = Depends(requires("engineer"))) -> dict:
    """Stop a job: a queued one does not run; a running one and its children (its process group) get TERM, then
    KILL after 10 s, at once when it runs on this host, else from its runner within a second or so."""
    runner, store = _runner(request), request.app.state.store
    _job(request, job_id)
    if store.cancel_job(job_id) not in ACTIVE:
        raise Conflict(f"job {job_id} is not running")
    job = _job(request, job_id)
    if job["state"] == "running" and job["host"] == runner.host and job["pid"] is not None and runner.alive(job):
        runner.stop(job)
    store.audit(who.actor, "job.cancel", job_id)
    return _view(_job(request, job_id), tail=50)


def _job(request: Request, job_id: str) -> dict[str, Any]:
    job = request.app.state.store.job(job_id) if re.fullmatch(r"[\w-]+", job_id) else None
    if job is None:
        raise NotFoundError(f"no job {job_id!r}", hint="GET /console/jobs lists them")
    return job


def _view(job: dict[str, Any], *, tail: int) -> dict[str, Any]:
    """A job as the API shows it: its record, its ``status``, ``progress`` and the last ``tail`` lines of its log
    (from its file when it is on this host, else the tail its runner copied into the record)."""
    status = _STATUS[job["state"]]
    text = read_tail(job["log_path"]) or job["log_tail"]
    # Progress bars redraw with carriage returns: keep only the latest state of each line.
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.replace("\r\n", "\n").split("\n")]
    percents = _PERCENT.findall(text[-4000:])
    return {
        "id": job["id"], "command": job["command"], "args": job["args"],
        "argv": job_argv(job["command"], job["args"])[1:], "actor": job["actor"],
        "started_at": job["started_at"] or job["created_at"], "returncode": job["exit_code"],
        "finished_at": job["ended_at"], "pid": job["pid"], "process_start": job["pid_start"], "host": job["host"],
        "state": job["state"], "status": status, "cancel_requested": job["cancel_requested"], "reason": job["reason"],
        "progress": 1.0 if status == "succeeded" else (int(percents[-1]) / 100 if percents else None),
        "log": "\n".join(lines[-tail:]) if tail else "",
    }  # fmt: skip
