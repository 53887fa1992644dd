"""Resumable runs: named steps done in order, each at most once, so that a run killed at any point is finished by
running it again.

The order that makes a killed run recoverable:

1. take the run lock (an ``fcntl.flock`` on one file shared by every run of a workspace: one run at a time; the
   kernel drops it when its holder exits, however it exits);
2. read ``state.json`` from the run folder (a new run has none);
3. for each step in order: ``done`` → skip it and hand its recorded outputs on; otherwise record it ``running``
   (state written) → wipe and recreate its scratch folder ``steps/<name>/`` → call it → record its outputs and
   ``done`` (state written). A step that raises is recorded ``failed`` with the error, and the error goes up.

A step found ``running`` once the lock is held was left so by a process that died mid-step (its lock is gone, so
its process is), and is run again from an empty scratch folder: a step must be idempotent given its inputs, and
should write only into its scratch folder. Once a step runs, the steps after it run too, even if recorded
``done`` (their inputs may have changed; that happens only when the list of steps changed between runs).

Every state write goes to a temporary file in the run folder, is fsync'ed, then ``os.replace``'d over
``state.json``: a reader, or the next run after a crash, sees the state before a write or after it, never half of
one. Outputs are stored as JSON (a ``Path`` becomes its string), and a step is handed them as read back from JSON,
so a resumed run sees exactly what an uninterrupted one does.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from helpline.platform.errors import DataError, HelplineError

STATE_FILE = "state.json"
LOCK_FILE = "run.lock"  # in the folder that holds the runs, unless run_steps is given another
SCRATCH = "steps"

StepStatus = Literal["pending", "running", "done", "failed"]
_NAME = re.compile(r"[a-z0-9][a-z0-9_-]*")


class RunBusyError(HelplineError):
    """Another run holds the workspace's run lock."""

    http_status = 409


@dataclass(frozen=True)
class StepContext:
    """What a step is handed: where to write, and what the steps before it produced."""

    run_dir: Path
    name: str
    scratch: Path  # this step's own folder, empty at the start of every attempt
    outputs: Mapping[str, Mapping[str, Any]]  # by step name, every step done before this one


@dataclass(frozen=True)
class Step:
    """One named step; ``run`` returns its outputs (JSON data: paths, figures), or None for none."""

    name: str
    run: Callable[[StepContext], Mapping[str, Any] | None]

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name):
            raise ValueError(f"step name {self.name!r} must be lowercase letters, digits, '-' or '_'")


@dataclass
class StepRecord:
    """What the state file records of one step."""

    status: StepStatus = "pending"
    outputs: dict[str, Any] = field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    seconds: float | None = None  # wall time of the last attempt
    attempts: int = 0
    pid: int | None = None  # the process of the last attempt
    error: str | None = None


@dataclass
class RunState:
    """The state file of a run: every step's record, in order."""

    steps: dict[str, StepRecord] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)

    @property
    def outputs(self) -> dict[str, dict[str, Any]]:
        """The outputs of every step done, by step name."""
        return {name: rec.outputs for name, rec in self.steps.items() if rec.status == "done"}

    @property
    def finished(self) -> bool:
        return bool(self.steps) and all(rec.status == "done" for rec in self.steps.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "steps": {name: asdict(rec) for name, rec in self.steps.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        steps = {name: StepRecord(**rec) for name, rec in data.get("steps", {}).items()}
        return cls(steps=steps, created_at=data["created_at"], updated_at=data["updated_at"])


def read_state(run_dir: str | Path) -> RunState | None:
    """The recorded state of a run (None before its first step started), e.g. for a page that shows progress."""
    path = Path(run_dir) / STATE_FILE
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        return RunState.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(
            f"{path} is not a run state file ({e})", hint=f"remove {path.parent} to start that run over"
        ) from e


def run_steps(run_dir: str | Path, steps: Sequence[Step], *, lock_path: str | Path | None = None) -> RunState:
    """Run ``steps`` in order in ``run_dir``, skipping those a previous run finished (see the module docstring).

    ``lock_path`` is the file that admits one run at a time (default: ``run.lock`` beside ``run_dir``, shared by
    every run in the same folder); another run holding it raises :class:`RunBusyError` naming its process."""
    run_dir = Path(run_dir)
    names = [s.name for s in steps]
    if len(set(names)) != len(names):
        raise ValueError(f"step names must be unique: {names}")
    lock = Path(lock_path) if lock_path is not None else run_dir.parent / LOCK_FILE
    with hold_run_lock(lock, run_dir):
        state = read_state(run_dir) or RunState()
        for name in names:  # steps recorded by an earlier list of steps keep their place after these
            state.steps.setdefault(name, StepRecord())
        state.steps = {n: state.steps[n] for n in names} | state.steps
        rerun_rest = False
        for step in steps:
            if state.steps[step.name].status == "done" and not rerun_rest:
                continue
            rerun_rest = True
            _attempt(run_dir, step, state)
        return state


@contextmanager
def hold_run_lock(lock_path: str | Path, run_dir: str | Path = "") -> Iterator[None]:
    """Hold the run lock for the block, or raise :class:`RunBusyError` naming the process that holds it."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(lock_path) from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "run": str(run_dir), "since": time.time()}).encode())
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _busy(lock_path: Path) -> RunBusyError:
    try:
        holder = json.loads(lock_path.read_text("utf-8") or "{}")
    except (OSError, ValueError):
        holder = {}
    holder = holder if isinstance(holder, dict) else {}
    pid, run = holder.get("pid", "?"), holder.get("run") or "another run"
    return RunBusyError(
        f"another run is in progress (pid {pid}: {run}); one run at a time per workspace ({lock_path})",
        hint=f"wait for it to finish, or stop process {pid} and run again to resume it",
    )


def _attempt(run_dir: Path, step: Step, state: RunState) -> None:
    """Run one step from a clean scratch folder, recording it running, then done or failed."""
    rec = StepRecord(attempts=state.steps[step.name].attempts + 1, status="running", pid=os.getpid())
    rec.started_at = time.time()
    state.steps[step.name] = rec
    _write_state(run_dir, state)
    scratch = run_dir / SCRATCH / step.name
    if scratch.exists():
        shutil.rmtree(scratch)
    scratch.mkdir(parents=True)
    started = time.monotonic()
    context = StepContext(
        run_dir=run_dir,
        name=step.name,
        scratch=scratch,
        outputs=MappingProxyType({n: MappingProxyType(o) for n, o in state.outputs.items()}),
    )
    try:
        rec.outputs = _as_json(step.name, step.run(context))
    except BaseException as e:  # interrupted too: the next run retries it
        rec.status, rec.error = "failed", f"{type(e).__name__}: {e}"
        raise
    else:
        rec.status = "done"
    finally:
        rec.ended_at, rec.seconds = time.time(), time.monotonic() - started
        _write_state(run_dir, state)


def _as_json(step: str, outputs: Mapping[str, Any] | None) -> dict[str, Any]:
    """The outputs as they read back from the state file (a Path becomes a string)."""
    if outputs is None:
        return {}
    if not isinstance(outputs, Mapping):
        raise TypeError(f"step {step} returned a {type(outputs).__name__}, not a mapping of outputs")

    def encode(value: object) -> str:
        if isinstance(value, Path):
            return str(value)
        raise TypeError(f"step {step} returned an output that is not JSON data: {type(value).__name__}")

    return json.loads(json.dumps(dict(outputs), default=encode, allow_nan=False))


def _write_state(run_dir: Path, state: RunState) -> None:
    """Replace the state file whole (see the module docstring)."""
    state.updated_at = time.time()
    text = json.dumps(state.to_dict(), indent=2, ensure_ascii=False)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / STATE_FILE
    tmp = run_dir / f".{STATE_FILE}.{os.getpid()}.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(run_dir, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
