"""A real `helpline run` on loopback, for the reliability bench to load, break and attack.

``with LiveHelpline(options) as live:`` gives a fresh workspace in a temporary folder, made the way a user
makes one (`helpline init`; or, with ``seed``, a copy of an initialised workspace's registry and indexes
whose models stay where they are), one API key per role created in the gateway's store before the first
start (so `helpline run` prints none), and `helpline run --no-ui` as a subprocess in its own session on
free loopback ports, with the bench's settings passed as ``HELPLINE_*`` variables, until ``/ready``
answers 200. ``live.base_url``, ``live.keys[role]`` and ``live.workspace`` are what a section needs;
``gateway_pid`` and ``vllm_pid`` (read from ``/proc`` each time: the supervisor replaces the engine) are
what the fault scenarios kill; ``restart`` and ``kill_gateway`` bring it down and up again on the same
ports and workspace.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from helpline.evaluation.load import free_port
from helpline.platform.errors import EngineError
from helpline.platform.settings import VLLMSettings
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import ROLE_RANK, GatewayStore

VLLM_ENTRYPOINT = "vllm.entrypoints.openai.api_server"


@dataclass
class LiveOptions:
    """The settings the bench runs `helpline run` under (each becomes a ``HELPLINE_*`` variable)."""

    concurrency_cap: int = 4  # gateway.limits.max_concurrency: small, so that twice it is reachable on 2 cores
    max_tokens: int = 48  # generation.max_new_tokens: the request path is measured, not long prose
    hang_timeout_s: float = 12.0  # vllm.hang_timeout_s: a SIGSTOPped engine is found within a bench's patience
    upstream_timeout_s: float = 60.0  # gateway.limits.upstream_timeout_s
    gpu_memory_utilization: float = 0.1  # vllm.*: on CPU, the share of RAM for the KV cache (a 135M model needs little)
    startup_timeout_s: float = 600.0  # how long `helpline run` may take to answer /ready
    extra_env: dict[str, str] = field(default_factory=dict)  # any other HELPLINE_* variables

    def env(self) -> dict[str, str]:
        """The ``HELPLINE_*`` variables. The per-key rate limit is lifted, so that overload meets the
        concurrency cap (what the load section measures) rather than one key's rate."""
        env = {
            "HELPLINE_ENGINE": "vllm",
            "HELPLINE_GATEWAY__LIMITS__MAX_CONCURRENCY": str(self.concurrency_cap),
            "HELPLINE_GATEWAY__LIMITS__REQUESTS_PER_MINUTE": "100000",
            "HELPLINE_GATEWAY__LIMITS__BURST": "10000",
            "HELPLINE_GATEWAY__LIMITS__UPSTREAM_TIMEOUT_S": str(self.upstream_timeout_s),
            "HELPLINE_GENERATION__MAX_NEW_TOKENS": str(self.max_tokens),
            "HELPLINE_VLLM__GPU_MEMORY_UTILIZATION": str(self.gpu_memory_utilization),
        }
        if hang_detection_available():
            env |= {
                "HELPLINE_VLLM__HANG_TIMEOUT_S": str(self.hang_timeout_s),
                "HELPLINE_VLLM__HEALTH_INTERVAL_S": "2",
                "HELPLINE_VLLM__HEALTH_TIMEOUT_S": "3",
            }
        return {**env, **self.extra_env}


def hang_detection_available() -> bool:
    """Whether this version's vLLM supervisor restarts a server that stopped answering."""
    return "hang_timeout_s" in VLLMSettings.model_fields


# /proc ------------------------------------------------------------------------------------------


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state first), or None when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None and int(fields[1]) == pid:
            out.append(int(entry.name))
    return sorted(out)


def process_tree(pid: int) -> list[int]:
    """``pid`` and every live process below it."""
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        if alive(p):
            tree.append(p)
            todo += children(p)
    return tree


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def rss_mb(pids: list[int]) -> float:
    """Resident memory of ``pids`` together, in MiB (0 for those gone)."""
    total_kb = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total_kb += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return round(total_kb / 1024, 1)


def kill_all(pids: list[int]) -> list[int]:
    """SIGKILL those of ``pids`` still alive; returns them."""
    left = [p for p in pids if alive(p)]
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return left


def wait_gone(pids: list[int], timeout_s: float) -> list[int]:
    """Wait until none of ``pids`` is alive; those still alive at the timeout."""
    deadline = time.monotonic() + timeout_s
    while (left := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


# the live stack ---------------------------------------------------------------------------------


def helpline_env(workspace: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without its own ``HELPLINE_*`` settings, with the workspace and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    return {**env, "HELPLINE_WORKSPACE": str(workspace), **extra}


def helpline_command(
    workspace: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout_s: float = 600
) -> subprocess.CompletedProcess[str]:
    """Run `helpline ARGS` on ``workspace`` (``env``: further ``HELPLINE_*`` settings), as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "helpline", *args], cwd=cwd or workspace.parent, env=helpline_env(workspace, env or {}),
        capture_output=True, text=True, timeout=timeout_s,
    )  # fmt: skip


def copy_workspace(seed: Path, workspace: Path) -> None:
    """An initialised workspace at ``workspace`` from ``seed`` (a workspace folder nothing writes to now):
    its registry (SQLite's backup API), indexes and reports; the models stay in ``seed``, where the
    registry's paths point."""
    workspace.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(seed / "registry.sqlite") as src, sqlite3.connect(workspace / "registry.sqlite") as dst:
        src.backup(dst)
    for name in ("indexes", "reports"):
        if (seed / name).is_dir():
            shutil.copytree(seed / name, workspace / name, ignore=shutil.ignore_patterns("*.lock"), dirs_exist_ok=True)
    Workspace.at(workspace).ensure()


class LiveHelpline:
    """`helpline run --no-ui` on loopback over its own workspace (see the module docstring)."""

    def __init__(
        self,
        options: LiveOptions | None = None,
        *,
        root: Path | None = None,
        seed: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        """``root``: the folder to hold the workspace (default: a temporary one, removed at the end); ``seed``:
        an initialised workspace to copy instead of running `helpline init`; ``log_path``: where `helpline run`
        writes its output (default: beside the workspace)."""
        self.options = options or LiveOptions()
        self._tmp = None if root is not None else tempfile.TemporaryDirectory(prefix="helpline-reliability-")
        self.root = Path(root if root is not None else self._tmp.name)  # type: ignore[union-attr]
        self.workspace = self.root / ".helpline"
        self.seed = seed
        self.gateway_port, self.vllm_port = free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.gateway_port}"
        self.keys: dict[str, str] = {}
        self.log_path = log_path or self.root / "run.log"
        self.process: subprocess.Popen | None = None
        self.starts: list[float] = []  # seconds each start took until /ready

    @property
    def env(self) -> dict[str, str]:
        ports = {"HELPLINE_GATEWAY__PORT": str(self.gateway_port), "HELPLINE_VLLM__PORT": str(self.vllm_port)}
        return helpline_env(self.workspace, {**self.options.env(), **ports})

    def __enter__(self) -> LiveHelpline:
        try:
            self.prepare()
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    # setup ------------------------------------------------------------------------------------

    def prepare(self) -> None:
        """The workspace (initialised or copied from ``seed`` unless it already is) and a key per role."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not (self.workspace / "registry.sqlite").exists():
            if self.seed is not None:
                copy_workspace(self.seed, self.workspace)
            else:
                self.helpline("init", "--json", timeout_s=1800)
        store = GatewayStore(gateway_db(Workspace.at(self.workspace)))
        self.keys = {role: store.create_key(role, name=f"bench-{role}", actor="bench")[0] for role in ROLE_RANK}  # type: ignore[misc]

    def helpline(self, *args: str, timeout_s: float = 600) -> Any:
        """Run a `helpline` command on this workspace and settings; its JSON output (raises on failure)."""
        extra = {**self.options.env(), "HELPLINE_GATEWAY__PORT": str(self.gateway_port),
                 "HELPLINE_VLLM__PORT": str(self.vllm_port)}  # fmt: skip
        done = helpline_command(self.workspace, *args, env=extra, cwd=self.root, timeout_s=timeout_s)
        if done.returncode != 0:
            raise EngineError(f"`helpline {' '.join(args)}` failed: {done.stderr[-2000:]}", hint=f"see {self.root}")
        return json.loads(done.stdout) if "--json" in args else done.stdout

    # processes --------------------------------------------------------------------------------

    @property
    def gateway_pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    @property
    def vllm_pid(self) -> int | None:
        """The vLLM API server's pid, found below the gateway now (a restarted server has a new one)."""
        if self.gateway_pid is None:
            return None
        return next((p for p in process_tree(self.gateway_pid)[1:] if VLLM_ENTRYPOINT in cmdline(p)), None)

    def tree(self) -> list[int]:
        return process_tree(self.gateway_pid) if self.gateway_pid is not None else []

    def ready(self, timeout_s: float = 5.0) -> bool:
        try:
            return httpx.get(f"{self.base_url}/ready", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until /ready answers 200; EngineError when `helpline run` exits or the time runs out."""
        start = time.monotonic()
        while not self.ready():
            if self.process is not None and self.process.poll() is not None:
                raise EngineError(f"`helpline run` exited with {self.process.returncode}: {self.log_tail()}")
            if time.monotonic() - start > timeout_s:
                raise EngineError(f"`helpline run` was not ready within {timeout_s:.0f} s: {self.log_tail()}")
            time.sleep(1.0)
        return time.monotonic() - start

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def start(self) -> float:
        """Start `helpline run --no-ui` and wait for /ready; the seconds that took."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "helpline", "run", "--no-ui"], cwd=self.root, env=self.env,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        seconds = self.wait_ready(self.options.startup_timeout_s)
        self.starts.append(round(seconds, 1))
        return seconds

    def stop(self, timeout_s: float = 60.0) -> list[int]:
        """SIGTERM `helpline run` (it stops its engine), SIGKILL what is left after ``timeout_s``; the pids
        that had to be killed."""
        if self.process is None:
            return []
        tree = self.tree()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=timeout_s)
        left = kill_all(wait_gone(tree, 10))
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.process = None
        return left

    def kill_gateway(self, grace_s: float = 60.0) -> dict[str, Any]:
        """SIGKILL the gateway process alone (a crash: no cleanup runs). Its engine should go with it (the
        kernel signals a child whose parent died); what is still alive after ``grace_s`` is killed and
        reported as ``orphans``."""
        assert self.process is not None
        tree = self.tree()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.process = None
        start = time.monotonic()
        left = wait_gone(tree[1:], grace_s)
        return {"engine_gone_s": round(time.monotonic() - start, 1), "orphans": [cmdline(p)[:80] for p in left],
                "orphans_killed": kill_all(left)}  # fmt: skip

    def restart(self) -> float:
        """Stop and start again on the same ports and workspace; the seconds until ready."""
        self.stop()
        return self.start()

    def store(self) -> GatewayStore:
        """The gateway's database, opened from this process (to check what it committed)."""
        return GatewayStore(gateway_db(Workspace.at(self.workspace)))
