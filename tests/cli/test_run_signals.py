"""`helpline run` stopped the way systemd, `docker stop` and `kill` stop it (SIGTERM to its pid alone), as a
closed terminal stops it (SIGHUP) and as Ctrl-C does (SIGINT: the children, in sessions of their own, do not
get it from the terminal)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    """Running or stopped; a zombie waiting for whoever adopted it counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_stop_signal_stops_the_ui_too_and_exits_zero(
    sig: signal.Signals, workspace_dir: Path, tmp_path: Path
) -> None:
    gateway, ui = _free_port(), _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    env |= {"HELPLINE_GATEWAY__PORT": str(gateway), "HELPLINE_UI__PORT": str(ui)}
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpline", "run", "--engine", "transformers"],
        cwd=workspace_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    children: list[int] = []
    gateway_health, ui_health = f"http://127.0.0.1:{gateway}/health", f"http://127.0.0.1:{ui}/_stcore/health"
    try:
        deadline = time.monotonic() + 600
        while not (_answers(gateway_health) and _answers(ui_health)):
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "run.log").read_text()[-3000:]
            time.sleep(1)
        children = _children(proc.pid)
        assert children, "the UI runs as a child of `helpline run`"
        os.kill(proc.pid, sig)  # the parent alone, as `kill` and `docker stop` send it
        code = proc.wait(timeout=120)
        assert [pid for pid in children if _alive(pid)] == [], "a child of `helpline run` outlived it"
        assert not _answers(ui_health)
        assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
        log.close()
