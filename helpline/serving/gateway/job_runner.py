"""The runner of console jobs: it claims a queued job from the database (``store_jobs``), runs it as a subprocess
on this host, copies the tail of its output into the job's record every second, stops it when a cancel is asked
for, and records its end. It runs in each gateway (``gateway.job_runner: embedded``, a thread started with the
app) or as `helpline worker` on a host of its own (``external``).

A job runs as ``/bin/sh -c _RECORD_EXIT <logs/jobs/ID/exit_code> helpline ...`` in a process group of its own, its
output in ``logs/jobs/ID/output.log``: the shell writes the job's exit status when it ends, so its outcome is known
to a runner that is not its parent (a gateway restarted since, or a replica beside it). Every runner on a host
watches the running jobs recorded on that host (``watch``), whichever runner started them:

1. claimed: state ``running``, host set, no pid yet (the claiming runner is starting it; after ``STARTING_S``
   without a pid it is taken for failed: its runner stopped before it started it);
2. started: pid and the process's start time (``process_start``) recorded; while the process with that pid has that
   start time it is the job (a pid reused by another process has another start, and is never signalled);
3. ended: the status its shell wrote, or, when there is none and the process is gone, failed ("the runner stopped
   while it ran": killed with its runner, or the machine restarted). A job running on another host is that host's.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from helpline.platform.settings import Settings, load_settings
from helpline.platform.workspace import Workspace
from helpline.serving.gateway.store import GatewayStore

log = logging.getLogger("helpline.jobs")
TAIL_BYTES = 64 * 1024
#: How long a claimed job may stay without a pid before it is taken for lost with its runner.
STARTING_S = 60.0
STOPPED = "the runner stopped while it ran"
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


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (the boot's id and clock ticks since boot), or None when no such process runs
    (or it has exited and waits to be reaped). With the pid it names one process: a reused pid has another start.
    None where there is no ``/proc`` (a job not started by this runner then counts as ended)."""
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


def job_argv(command: str, args: list[str]) -> list[str]:
    """The job's command line: this Python's `helpline`, so it runs in the runner's installation."""
    return [sys.executable, "-m", "helpline", *command.split(), *args]


def read_tail(path: str | Path | None, limit: int = TAIL_BYTES) -> str | None:
    """The last ``limit`` bytes of the log at ``path`` as text; None when there is no such file on this host."""
    try:
        with open(path, "rb") as f:  # type: ignore[arg-type]
            f.seek(max(0, os.fstat(f.fileno()).st_size - limit))
            return f.read().decode("utf-8", errors="replace")
    except (OSError, TypeError):
        return None


class JobRunner:
    """Claims, runs, watches and stops the jobs of one host (see the module's docstring). Thread-safe."""

    def __init__(
        self, store: GatewayStore, workspace: Workspace, *, host: str | None = None,
        argv: Callable[[str, list[str]], list[str]] = job_argv, settings: Callable[[], Settings] = load_settings,
    ) -> None:  # fmt: skip
        self.store, self.workspace = store, workspace
        self.host = host or socket.gethostname()
        self._argv, self._settings = argv, settings
        self._own: dict[str, subprocess.Popen] = {}  # the jobs this runner started, reaped when they end
        self._lock = threading.Lock()

    def run_queued(self, job_id: str | None = None) -> str | None:
        """Claim ``job_id`` (default: the oldest queued job) and start it here; its id, or None when another runner
        claimed it first or nothing was queued."""
        claimed = self.store.claim_job(job_id, host=self.host)
        if claimed is None:
            return None
        job = self.store.job(claimed) or {}
        folder = self.workspace.logs / "jobs" / claimed
        try:
            folder.mkdir(parents=True, exist_ok=True)
            env = job_env(self.workspace.root, self._settings())
            argv = self._argv(job["command"], job["args"])
            with (folder / "output.log").open("wb") as out:
                process = subprocess.Popen(
                    ["/bin/sh", "-c", _RECORD_EXIT, str(folder / "exit_code"), *argv],
                    cwd=self.workspace.root.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL, start_new_session=True,  # so that a cancel stops its children too
                )  # fmt: skip
        except Exception as e:
            self.store.end_job(claimed, state="failed", exit_code=None, reason=f"could not start: {e}")
            raise
        with self._lock:
            self._own[claimed] = process
        log_path = str(folder / "output.log")
        self.store.job_started(claimed, pid=process.pid, pid_start=process_start(process.pid), log_path=log_path)
        return claimed

    def watch(self) -> None:
        """Look at every job running on this host: copy its log's tail, stop it if a cancel was asked for, record
        its end if it has ended."""
        for job in self.store.jobs(state="running", host=self.host, limit=1000):
            self._watch(job)

    def step(self, *, claims: bool = True) -> None:
        """One look: watch this host's jobs, then (``claims``) start the oldest queued one."""
        self.watch()
        if claims:
            self.run_queued()

    def run(self, stop: threading.Event, *, every_s: float = 1.0, claims: bool = True) -> None:
        """``step`` every ``every_s`` until ``stop`` is set; a failure is logged and tried again at the next step.
        Jobs it started keep running after it stops (a later runner on this host watches them)."""
        while not stop.is_set():
            try:
                self.step(claims=claims)
            except Exception as e:  # a database that cannot be reached, a job that cannot start: not the end
                log.error("console jobs: %s: %s", type(e).__name__, e)
            stop.wait(every_s)

    def alive(self, job: dict[str, Any]) -> bool:
        """Whether the job's process still runs (this runner's child, or the pid with its recorded start time)."""
        with self._lock:
            process = self._own.get(job["id"])
        if process is not None:
            return process.poll() is None
        return job["pid"] is not None and job["pid_start"] is not None and process_start(job["pid"]) == job["pid_start"]

    def stop(self, job: dict[str, Any], *, grace_s: float = 10.0) -> None:
        """Stop a job running on this host and its children (its process group): TERM, then KILL after
        ``grace_s``; recorded as cancelled."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not self.alive(job):
                break
            with contextlib.suppress(ProcessLookupError):  # it ended meanwhile
                os.killpg(job["pid"], sig)
            deadline = time.monotonic() + grace_s
            while self.alive(job) and time.monotonic() < deadline:
                time.sleep(0.05)
        self._record_end(job, cancelled=True)

    def _watch(self, job: dict[str, Any]) -> None:
        if job["pid"] is None:  # claimed, not started yet
            with self._lock:
                starting = job["id"] in self._own
            if not starting and time.time() - (job["started_at"] or 0) > STARTING_S:
                self.store.end_job(job["id"], state="failed", exit_code=None, reason=STOPPED)
            return
        if not self.alive(job):
            self._record_end(job, cancelled=job["cancel_requested"])
        elif job["cancel_requested"]:
            self.stop(job)
        else:
            text = read_tail(job["log_path"])
            if text is not None and text != job["log_tail"]:
                self.store.job_tail(job["id"], text)

    def _record_end(self, job: dict[str, Any], *, cancelled: bool) -> None:
        with self._lock:
            process = self._own.pop(job["id"], None)
        code = _exit_code(job["log_path"])
        if code is None and process is not None:
            code = process.poll()
        if code is None and cancelled:
            code = -signal.SIGKILL  # killed before its shell could write its status
        if code is None:
            state, reason = "failed", STOPPED
        else:
            state, reason = ("cancelled" if cancelled else "succeeded" if code == 0 else "failed"), ""
        self.store.end_job(job["id"], state=state, exit_code=code, log_tail=read_tail(job["log_path"]), reason=reason)


def _exit_code(log_path: str | None) -> int | None:
    """The status the job's shell recorded when it ended (None: it has not, or was killed before it could)."""
    try:
        return int((Path(log_path).parent / "exit_code").read_text())  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return None
