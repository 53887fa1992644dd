"""Console routes for engineers' jobs: run `helpline data|train|eval|bench ...` as a subprocess,
one at a time, and follow its progress and log (split from console_router by role).

A job gets a scrubbed environment (``job_env``): what programs need, helpline's settings and the workspace's
teacher key, none of the gateway's other secrets, which a job's arguments could otherwise send anywhere.

Each job is recorded on disk in ``<workspace>/logs/jobs/<id>/``: ``job.json`` (id, pid, the process's start
time, command line, log path, and its return code once known), ``output.log``, and ``exit_code``, written by the
small shell that runs the job when it ends, so its outcome is known to a gateway that is not its parent. A
gateway started later, or a replica beside it on the same host, lists the jobs with their outcome and adopts one
still running: listed as running, cancellable with its process group. (Replicas on several hosts need jobs in a
shared database with a worker; pids mean nothing across hosts.) A recorded pid counts as that job only while the
process with that pid also has the recorded start time (``/proc``), so a pid reused by another process is never
adopted or signalled.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.settings import Settings, load_settings
from helpline.serving.gateway.auth import Principal, requires
from helpline.serving.gateway.console_router import JOB_GROUPS, Conflict, _lock, _workspace

console_jobs = APIRouter(prefix="/console", tags=["console"])
_PERCENT = re.compile(r"(\d{1,3})%")
#: What a job inherits of the gateway's environment besides helpline's settings: what programs need to run.
_ENV_NAMES = {
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH", "VIRTUAL_ENV",
    "CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE",
}  # fmt: skip
#: HELPLINE_ variables that are not settings but name no secret either.
_HELPLINE_EXTRA = {"HELPLINE_CONFIG", "HELPLINE_HALUEVAL_DIR"}
#: Runs the job (``"$@"``) and writes its exit status to the file named by ``$0``. TERM and INT are trapped, so that
#: a cancelled job's status (143) is written too; the job itself gets them with its process group.
_RECORD_EXIT = 'trap : TERM INT; "$@"; status=$?; echo $status > "$0.tmp" && mv "$0.tmp" "$0"; exit $status'


class JobRequest(BaseModel):
    command: str = Field(description="A `helpline` command, e.g. 'train sft' or 'eval retrieval'.")
    args: list[str] = Field(default_factory=list, max_length=64, description="Its arguments, one per item.")


@dataclass(frozen=True)
class Adopted:
    """A job that an earlier gateway started and that still runs. It is not this process's child: it is watched
    through ``/proc`` (``process_start``) and its outcome read from the ``exit_code`` file."""

    pid: int
    started: str  # process_start() when it was started

    def poll(self) -> int | None:
        """None while it runs, as ``Popen.poll``; then 0 (its outcome is in its exit_code file)."""
        return None if process_start(self.pid) == self.started else 0


def _jobs(request: Request) -> dict[str, subprocess.Popen | Adopted]:
    """The job processes this gateway knows by id (kept on the app, so apps built in tests stay apart): its own, and
    the running ones recorded by any other gateway of this workspace, looked for again at every call: one that
    started earlier, and a replica beside it on the same host, whose jobs it then lists as running, counts against
    one job at a time, and can cancel."""
    with _lock:
        if not hasattr(request.app.state, "console_jobs"):
            request.app.state.console_jobs = {}
        table = request.app.state.console_jobs
        for job_id, adopted in _adopt(_workspace(request).logs / "jobs").items():
            table.setdefault(job_id, adopted)
        return table


def _adopt(root: Path) -> dict[str, subprocess.Popen | Adopted]:
    """The recorded jobs still running: same pid, same start time (not a later process that reuses the pid)."""
    adopted: dict[str, subprocess.Popen | Adopted] = {}
    for record in root.glob("*/job.json") if root.is_dir() else []:
        try:
            meta = json.loads(record.read_text())
        except (OSError, ValueError):  # cut short by a crash while it was written: nothing to adopt
            continue
        started = meta.get("process_start")
        if meta.get("returncode") is None and started and process_start(meta["pid"]) == started:
            adopted[meta["id"]] = Adopted(meta["pid"], started)
    return adopted


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (the boot's id and clock ticks since boot), or None when no such process runs
    (or it has exited and waits to be reaped). With the pid it names one process: a reused pid has another start.
    None where there is no ``/proc`` (earlier jobs then show as lost, and are not adopted)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and parentheses
    return None if fields[0] in ("Z", "X") else f"{boot}:{fields[19]}"


def job_env(workspace: Path, settings: Settings) -> dict[str, str]:
    """A job's environment: what programs need (``_ENV_NAMES``, ``LC_*``), helpline's settings (``HELPLINE_<SETTING>``;
    settings hold no secrets, they name them), and the one secret a job may use: the workspace's teacher key, the
    variable its own ``teacher.api_key_env`` names (a distill config sends it only to ``teacher.base_url``)."""
    settings_vars = tuple(f"HELPLINE_{name.upper()}" for name in type(settings).model_fields)
    keep = {settings.teacher.api_key_env} if settings.teacher.api_key_env else set()

    def kept(name: str) -> bool:
        if name in _ENV_NAMES or name in keep or name.startswith("LC_") or name in _HELPLINE_EXTRA:
            return True
        upper = name.upper()
        return any(upper == v or upper.startswith(f"{v}__") for v in settings_vars)

    env = {k: v for k, v in os.environ.items() if kept(k)}
    return {**env, "HELPLINE_WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}


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
    """The job's command line: this Python's `helpline`, so it runs in the gateway's installation."""
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
        running = [j for j, p in table.items() if p.poll() is None]  # adopted ones too
        if running:
            raise Conflict(f"job {running[0]} is still running", hint="wait for it or cancel it first")
        job_id = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        folder = ws.logs / "jobs" / job_id
        folder.mkdir(parents=True)
        argv = job_argv(body.command, body.args)
        meta = {"id": job_id, "command": body.command, "args": body.args, "argv": argv[1:], "actor": who.actor,
                "started_at": time.time(), "returncode": None, "finished_at": None,
                "log": str(folder / "output.log")}  # fmt: skip
        env = job_env(ws.root, load_settings())
        with (folder / "output.log").open("wb") as log:
            table[job_id] = process = subprocess.Popen(
                ["/bin/sh", "-c", _RECORD_EXIT, str(folder / "exit_code"), *argv], cwd=ws.root.parent, env=env,
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # so that cancel can stop the job's own children too
            )  # fmt: skip
        meta.update(pid=process.pid, process_start=process_start(process.pid))
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
    """Stop a running job and its children (its process group): TERM, then KILL after 10 s."""
    folder = _job_folder(request, job_id)
    process = _jobs(request).get(job_id)
    if process is None or process.poll() is not None:  # an adopted one: checked against its start time
        raise Conflict(f"job {job_id} is not running")
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
            os.killpg(process.pid, sig)
        if _ended(process, timeout_s=10):
            break
    if not (folder / "exit_code").is_file():  # killed before its shell could write its status
        _record_end(folder, -signal.SIGKILL)
    request.app.state.store.audit(who.actor, "job.cancel", job_id)
    return _job_state(folder, _jobs(request), tail=50)


def _ended(process: subprocess.Popen | Adopted, *, timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` for ``process`` to end."""
    deadline = time.monotonic() + timeout_s
    while process.poll() is None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _record_end(folder: Path, returncode: int) -> dict[str, Any]:
    meta = json.loads((folder / "job.json").read_text())
    meta.update(returncode=returncode, finished_at=time.time())
    (folder / "job.json").write_text(json.dumps(meta, indent=2))
    return meta


def _exit_code(folder: Path) -> int | None:
    """The status the job's shell recorded when it ended (None: it has not, or was killed before it could)."""
    try:
        return int((folder / "exit_code").read_text())
    except (OSError, ValueError):
        return None


def _job_folder(request: Request, job_id: str) -> Path:
    folder = _workspace(request).logs / "jobs" / job_id
    if not re.fullmatch(r"[\w-]+", job_id) or not (folder / "job.json").is_file():
        raise NotFoundError(f"no job {job_id!r}", hint="GET /console/jobs lists them")
    return folder


def _job_state(folder: Path, table: dict[str, subprocess.Popen | Adopted], *, tail: int) -> dict[str, Any]:
    meta = json.loads((folder / "job.json").read_text())
    process = table.get(meta["id"])
    running = process is not None and process.poll() is None
    if meta["returncode"] is None and not running:
        code = _exit_code(folder)
        if code is None and isinstance(process, subprocess.Popen):
            code = process.returncode
        if code is not None:
            meta = _record_end(folder, code)
    if meta["returncode"] is not None:
        meta["status"] = "succeeded" if meta["returncode"] == 0 else "failed"
    elif running:
        meta["status"] = "running"
    else:
        meta["status"] = "lost"  # stopped without a recorded outcome (killed, or the machine restarted)
    text = (folder / "output.log").read_text(encoding="utf-8", errors="replace")
    # Progress bars redraw with carriage returns: keep only the latest state of each line.
    lines = [ln.rsplit("\r", 1)[-1] for ln in text.replace("\r\n", "\n").split("\n")]
    percents = _PERCENT.findall(text[-4000:])
    meta["progress"] = 1.0 if meta["status"] == "succeeded" else (int(percents[-1]) / 100 if percents else None)
    meta["log"] = "\n".join(lines[-tail:]) if tail else ""
    return meta
