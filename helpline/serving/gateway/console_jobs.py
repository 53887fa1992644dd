"""Console routes for engineers' jobs: run `helpline data|train|eval|bench ...` as a subprocess,
one at a time, and follow its progress and log (split from console_router by role)."""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.console_router import JOB_GROUPS, Conflict, _lock, _workspace

console_jobs = APIRouter(prefix="/console", tags=["console"])
_PERCENT = re.compile(r"(\d{1,3})%")


class JobRequest(BaseModel):
    command: str = Field(description="A `helpline` command, e.g. 'train sft' or 'eval retrieval'.")
    args: list[str] = Field(default_factory=list, max_length=64, description="Its arguments, one per item.")


def _jobs(request: Request) -> dict[str, subprocess.Popen]:
    """This gateway's job processes by id (kept on the app, so apps built in tests stay apart)."""
    with _lock:
        if not hasattr(request.app.state, "console_jobs"):
            request.app.state.console_jobs = {}
        return request.app.state.console_jobs


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


def job_argv(command: str, args: list[str]) -> list[str]:
    """The job's command line: this Python's `helpline`, so it runs in the gateway's environment."""
    return [sys.executable, "-m", "helpline", *command.split(), *args]


@console_jobs.post("/jobs")
def start_job(body: JobRequest, request: Request, who: Principal = Depends(requires("engineer"))) -> dict:
    """Start `helpline COMMAND ARGS...` in the workspace as a subprocess (one job at a time: the
    machine's cores are shared with serving). Follow it with GET /console/jobs/{id}."""
    if body.command not in _job_commands():
        raise ConfigError(f"{body.command!r} cannot be run as a job", hint="GET /console/jobs/commands lists them")
    if any(len(a) > 1000 for a in body.args):
        raise ConfigError("an argument is longer than 1000 characters")
    ws, table = _workspace(request), _jobs(request)
    with _lock:
        running = [j for j, p in table.items() if p.poll() is None]
        if running:
            raise Conflict(f"job {running[0]} is still running", hint="wait for it or cancel it first")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = ws.logs / "jobs" / job_id
        folder.mkdir(parents=True)
        argv = job_argv(body.command, body.args)
        meta = {"id": job_id, "command": body.command, "args": body.args, "argv": argv[1:], "actor": who.actor,
                "started_at": time.time(), "returncode": None, "finished_at": None}  # fmt: skip
        env = {**os.environ, "HELPLINE_WORKSPACE": str(ws.root), "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}
        with (folder / "output.log").open("wb") as log:
            table[job_id] = subprocess.Popen(
                argv, cwd=ws.root.parent, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # so that cancel can stop the job's own children too
            )  # fmt: skip
        meta["pid"] = table[job_id].pid
        (folder / "job.json").write_text(json.dumps(meta, indent=2))
    request.app.state.store.audit(who.actor, "job.start", job_id, {"command": body.command, "args": body.args})
    return meta


@console_jobs.get("/jobs")
def jobs(request: Request, _: Principal = Depends(requires("engineer"))) -> dict:
    root = _workspace(request).logs / "jobs"
    ids = sorted((p.name for p in root.iterdir() if (p / "job.json").is_file()), reverse=True) if root.is_dir() else []
    return {"jobs": [_job_state(root / i, _jobs(request), tail=0) for i in ids[:50]]}


@console_jobs.get("/jobs/{job_id}")
def job(
    job_id: str, request: Request, tail: int = Query(200, ge=0, le=5000), _: Principal = Depends(requires("engineer"))
) -> dict:
    """A job's status, progress (the last percentage its output printed) and the tail of its log."""
    return _job_state(_job_folder(request, job_id), _jobs(request), tail=tail)


@console_jobs.post("/jobs/{job_id}/cancel")
def cancel_job(job_id: str, request: Request, who: Principal = Depends(requires("engineer"))) -> dict:
    folder = _job_folder(request, job_id)
    process = _jobs(request).get(job_id)
    if process is None or process.poll() is not None:
        raise Conflict(f"job {job_id} is not running")
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    request.app.state.store.audit(who.actor, "job.cancel", job_id)
    return _job_state(folder, _jobs(request), tail=50)


def _job_folder(request: Request, job_id: str) -> Path:
    folder = _workspace(request).logs / "jobs" / job_id
    if not re.fullmatch(r"[\w-]+", job_id) or not (folder / "job.json").is_file():
        raise NotFoundError(f"no job {job_id!r}", hint="GET /console/jobs lists them")
    return folder


def _job_state(folder: Path, table: dict[str, subprocess.Popen], *, tail: int) -> dict[str, Any]:
    meta = json.loads((folder / "job.json").read_text())
    process = table.get(meta["id"])
    if meta["returncode"] is None and process is not None and process.poll() is not None:
        meta.update(returncode=process.returncode, finished_at=time.time())
        (folder / "job.json").write_text(json.dumps(meta, indent=2))
    if meta["returncode"] is not None:
        meta["status"] = "succeeded" if meta["returncode"] == 0 else "failed"
    elif process is not None:
        meta["status"] = "running"
    else:
        meta["status"] = "lost"  # started by an earlier gateway process that has since stopped
    text = (folder / "output.log").read_text(encoding="utf-8", errors="replace")
    # Progress bars redraw with carriage returns: keep only the latest state of each line.
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.replace("\r\n", "\n").split("\n")]
    percents = _PERCENT.findall(text[-4000:])
    meta["progress"] = 1.0 if meta["status"] == "succeeded" else (int(percents[-1]) / 100 if percents else None)
    meta["log"] = "\n".join(lines[-tail:]) if tail else ""
    return meta
