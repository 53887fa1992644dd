"""Resumable runs: finished steps are never repeated, a killed step is redone from a clean folder, one run at a
time, and the state file is always whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from helpline.platform.runs import (
    STATE_FILE,
    RunBusyError,
    Step,
    StepContext,
    read_state,
    run_steps,
)

# A run in a child process: steps count their calls in CALLS; step "train" leaves a partial file in its scratch
# folder and, when KILL is set, dies there as a killed process would (no exception, no cleanup); when HOLD is
# set, "train" signals STARTED and waits for RELEASE, holding the run lock meanwhile.
CHILD = r"""
import os, sys, time
from pathlib import Path
from helpline.platform.runs import Step, run_steps

run_dir, calls = Path(sys.argv[1]), Path(sys.argv[2])

def count(name):
    with (calls / name).open("a") as f:
        f.write("x")

def collect(ctx):
    count("collect")
    (ctx.scratch / "rows.jsonl").write_text("a\nb\n")
    return {"rows": 2, "path": ctx.scratch / "rows.jsonl"}

def train(ctx):
    count("train")
    leftovers = sorted(p.name for p in ctx.scratch.iterdir())
    (ctx.scratch / "partial.bin").write_text("half")
    if os.environ.get("HOLD"):
        (calls / "STARTED").write_text(str(os.getpid()))
        deadline = time.monotonic() + 60
        while not (calls / "RELEASE").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    if os.environ.get("KILL"):
        os._exit(9)
    return {"leftovers": leftovers, "rows_seen": len(Path(ctx.outputs["collect"]["path"]).read_text().split())}

def evaluate(ctx):
    count("evaluate")
    return {"score": ctx.outputs["train"]["rows_seen"] / 2}

run_steps(run_dir, [Step("collect", collect), Step("train", train), Step("evaluate", evaluate)])
"""


def _child(tmp_path: Path, **env: str) -> subprocess.Popen[bytes]:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    (tmp_path / "calls").mkdir(exist_ok=True)
    run_dir = tmp_path / "runs" / "r1"
    return subprocess.Popen(
        [sys.executable, str(script), str(run_dir), str(tmp_path / "calls")],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def _calls(tmp_path: Path, name: str) -> int:
    path = tmp_path / "calls" / name
    return len(path.read_text()) if path.exists() else 0


def _counting(calls: Path, name: str, fn: Callable[[StepContext], Mapping[str, Any] | None]) -> Step:
    def run(ctx: StepContext) -> Mapping[str, Any] | None:
        calls.mkdir(exist_ok=True)
        with (calls / name).open("a") as f:
            f.write("x")
        return fn(ctx)

    return Step(name, run)


def test_outputs_pass_between_steps_as_they_read_back_from_the_state_file(tmp_path: Path) -> None:
    def prepare(ctx: StepContext) -> dict[str, Any]:
        (ctx.scratch / "data.txt").write_text("one\ntwo\nthree\n")
        return {"path": ctx.scratch / "data.txt", "rows": 3}

    def count_lines(ctx: StepContext) -> dict[str, Any]:
        path = ctx.outputs["prepare"]["path"]
        assert isinstance(path, str)  # as a resumed run would see it
        return {"lines": len(Path(path).read_text().splitlines()), "rows": ctx.outputs["prepare"]["rows"]}

    run_dir = tmp_path / "runs" / "r1"
    state = run_steps(run_dir, [Step("prepare", prepare), Step("count", count_lines)])
    assert state.outputs["count"] == {"lines": 3, "rows": 3}
    on_disk = json.loads((run_dir / STATE_FILE).read_text())
    assert on_disk["steps"]["prepare"]["outputs"]["path"] == str(run_dir / "steps" / "prepare" / "data.txt")
    for rec in on_disk["steps"].values():
        assert rec["status"] == "done"
        assert rec["started_at"] <= rec["ended_at"]
        assert rec["attempts"] == 1 and rec["pid"] == os.getpid()


def test_a_run_that_failed_in_step_two_resumes_there_without_repeating_step_one(tmp_path: Path) -> None:
    calls, run_dir = tmp_path / "calls", tmp_path / "runs" / "r1"
    broken = {"yes": True}

    def flaky(ctx: StepContext) -> dict[str, Any]:
        if broken["yes"]:
            raise RuntimeError("disk full")
        return {"doubled": ctx.outputs["first"]["n"] * 2}

    steps = [
        _counting(calls, "first", lambda ctx: {"n": 21}),
        _counting(calls, "second", flaky),
        _counting(calls, "third", lambda ctx: {"answer": ctx.outputs["second"]["doubled"]}),
    ]
    with pytest.raises(RuntimeError, match="disk full"):
        run_steps(run_dir, steps)
    failed = read_state(run_dir)
    assert failed is not None
    assert [r.status for r in failed.steps.values()] == ["done", "failed", "pending"]
    assert failed.steps["second"].error == "RuntimeError: disk full"

    broken["yes"] = False
    state = run_steps(run_dir, steps)
    assert state.outputs["third"] == {"answer": 42}
    assert [_calls(tmp_path, n) for n in ("first", "second", "third")] == [1, 2, 1]
    assert state.steps["second"].attempts == 2

    run_steps(run_dir, steps)  # a finished run does nothing more
    assert [_calls(tmp_path, n) for n in ("first", "second", "third")] == [1, 2, 1]


def test_a_run_killed_mid_step_resumes_at_that_step_from_an_empty_scratch_folder(tmp_path: Path) -> None:
    killed = _child(tmp_path, KILL="1")
    out, _ = killed.communicate(timeout=120)
    assert killed.returncode == 9, out.decode()
    run_dir = tmp_path / "runs" / "r1"
    left = read_state(run_dir)  # whole, though its writer died
    assert left is not None
    assert {n: r.status for n, r in left.steps.items()} == {
        "collect": "done",
        "train": "running",
        "evaluate": "pending",
    }
    assert (run_dir / "steps" / "train" / "partial.bin").exists()

    resumed = _child(tmp_path)
    out, _ = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, out.decode()
    state = read_state(run_dir)
    assert state is not None and state.finished
    assert [_calls(tmp_path, n) for n in ("collect", "train", "evaluate")] == [1, 2, 1]
    assert state.outputs["train"] == {"leftovers": [], "rows_seen": 2}  # the dead attempt's file was wiped
    assert state.outputs["evaluate"] == {"score": 1.0}
    assert state.steps["train"].pid == resumed.pid != left.steps["train"].pid


def test_a_second_run_is_refused_while_one_is_in_progress_naming_its_pid(tmp_path: Path) -> None:
    holder = _child(tmp_path, HOLD="1")
    started = tmp_path / "calls" / "STARTED"
    try:
        deadline = time.monotonic() + 60
        while not started.exists() and holder.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert started.exists(), holder.communicate()[0].decode()
        other = tmp_path / "runs" / "r2"
        with pytest.raises(RunBusyError) as err:
            run_steps(other, [Step("only", lambda ctx: {})])
        assert f"pid {holder.pid}" in err.value.message
        assert str(tmp_path / "runs" / "r1") in err.value.message
        assert read_state(other) is None  # refused before anything was written
    finally:
        (tmp_path / "calls" / "RELEASE").write_text("")
        out, _ = holder.communicate(timeout=120)
    assert holder.returncode == 0, out.decode()
    assert run_steps(tmp_path / "runs" / "r2", [Step("only", lambda ctx: {"ok": True})]).outputs == {
        "only": {"ok": True}
    }


def test_a_crash_while_saving_the_state_leaves_the_previous_state_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process dies after writing the new state but before it replaces the old one (simulated: the rename
    raises): the state file still holds the last whole state, and the run resumes from it."""

    class Died(BaseException):
        pass

    run_dir = tmp_path / "r1"
    steps = [Step("first", lambda ctx: {"n": 1}), Step("second", lambda ctx: {"n": 2})]
    run_steps(run_dir, steps[:1])
    before = (run_dir / STATE_FILE).read_text()
    real_replace = os.replace

    def die(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        raise Died

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(Died):
        run_steps(run_dir, steps)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (run_dir / STATE_FILE).read_text() == before
    state = run_steps(run_dir, steps)
    assert state.outputs == {"first": {"n": 1}, "second": {"n": 2}}


def test_a_reader_never_sees_a_half_written_state_file(tmp_path: Path) -> None:
    run_dir = tmp_path / "r1"
    big = "x" * 200_000  # every state write is megabytes: a torn write would be caught in the act
    steps = [Step(f"s{i}", lambda ctx: {"blob": big}) for i in range(30)]
    run_steps(run_dir, steps[:1])
    seen, problems, stop = [0], [], threading.Event()

    def read_forever() -> None:
        while not stop.is_set():
            try:
                json.loads((run_dir / STATE_FILE).read_text())
                seen[0] += 1
            except (ValueError, FileNotFoundError) as e:
                problems.append(repr(e)[:80])

    reader = threading.Thread(target=read_forever)
    reader.start()
    try:
        run_steps(run_dir, steps)
    finally:
        stop.set()
        reader.join()
    assert problems == []
    assert seen[0] > 0
    assert not list(run_dir.glob(".*.tmp"))  # no temporary file left behind


def test_steps_after_a_rerun_step_run_again(tmp_path: Path) -> None:
    calls, run_dir = tmp_path / "calls", tmp_path / "r1"
    run_steps(run_dir, [_counting(calls, "a", lambda ctx: {}), _counting(calls, "c", lambda ctx: {})])
    # a step inserted before a finished one: its result may change what the later one would do
    run_steps(
        run_dir,
        [
            _counting(calls, "a", lambda ctx: {}),
            _counting(calls, "b", lambda ctx: {}),
            _counting(calls, "c", lambda ctx: {}),
        ],
    )
    assert [_calls(tmp_path, n) for n in ("a", "b", "c")] == [1, 1, 2]


def test_step_names_must_be_plain_and_unique(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="lowercase"):
        Step("../escape", lambda ctx: {})
    with pytest.raises(ValueError, match="unique"):
        run_steps(tmp_path / "r", [Step("a", lambda ctx: {}), Step("a", lambda ctx: {})])


def test_outputs_that_are_not_json_fail_the_step(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON"):
        run_steps(tmp_path / "r", [Step("a", lambda ctx: {"x": object()})])
    state = read_state(tmp_path / "r")
    assert state is not None and state.steps["a"].status == "failed"
