"""Children do not outlive their parent: SIGTERM and SIGHUP run the parent's cleanup, a parent killed
outright takes its tied children with it, and stopping a child stops what it forked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.platform.processes import die_with_parent, stop_group

SLEEPER = [sys.executable, "-c", "import time; time.sleep(600)"]

# A parent in the shape of `helpline run`: it starts one child in its own session (tied to its own life
# when argv[1] is "tie"), prints the child's pid, serves until stopped, then stops the child.
PARENT = f"""
import subprocess, sys, time
from helpline.platform.processes import die_with_parent, run_until_stopped, stop_group
children = []
def serve():
    tie = die_with_parent if sys.argv[1] == "tie" else None
    children.append(subprocess.Popen({SLEEPER!r}, stdout=subprocess.DEVNULL, start_new_session=True, preexec_fn=tie))
    print(children[0].pid, flush=True)
    time.sleep(600)
def stop():
    for child in children:
        stop_group(child)
    print("stopped", flush=True)
print("signal", run_until_stopped(serve, stop), flush=True)
"""

needs_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; PR_SET_PDEATHSIG")


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie waiting for whoever adopted it counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _eventually(check: Callable[[], bool], *, within_s: float = 60.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def _start_parent(tie: bool) -> tuple[subprocess.Popen, int]:
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, "tie" if tie else "free"], stdout=subprocess.PIPE, text=True
    )
    assert parent.stdout is not None
    return parent, int(parent.stdout.readline())


@needs_linux
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_runs_the_parents_cleanup_and_exits_zero(sig: signal.Signals) -> None:
    parent, child = _start_parent(tie=False)  # not tied: only the parent's own cleanup can stop it
    try:
        parent.send_signal(sig)
        out, _ = parent.communicate(timeout=60)
        assert parent.returncode == 0
        assert out.split("\n")[:2] == ["stopped", f"signal {int(signal.SIGTERM)}"]
        assert not _alive(child)
    finally:
        parent.kill()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@needs_linux
def test_a_tied_child_dies_with_a_parent_killed_outright() -> None:
    parent, child = _start_parent(tie=True)
    try:
        parent.kill()  # no cleanup runs: only the kernel can end the child now
        parent.wait(timeout=60)
        assert _eventually(lambda: not _alive(child)), "the child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)


@needs_linux
def test_stop_group_ends_a_stopped_process_and_what_it_forked(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild.pid"
    forks = f"import subprocess, time; p = subprocess.Popen({SLEEPER!r}); open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(600)"  # noqa: E501
    proc = subprocess.Popen([sys.executable, "-c", forks], start_new_session=True, preexec_fn=die_with_parent)
    try:
        assert _eventually(lambda: pid_file.exists() and pid_file.read_text() != "")
        grandchild = int(pid_file.read_text())
        os.kill(proc.pid, signal.SIGSTOP)  # as a hung server
        stop_group(proc, timeout_s=30)
        assert proc.returncode is not None
        assert _eventually(lambda: not _alive(grandchild)), "the forked process outlived its stopped parent"
    finally:
        if proc.poll() is None:
            proc.kill()
