"""The vLLM supervisor over a stand-in server: it restarts a server that died and one that hangs, and a
stop or a restart takes the server's whole process group with it."""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from helpline.engines.vllm_server import HangWatch, VLLMServer
from helpline.platform.settings import VLLMSettings

# Answers every GET with 200 (vLLM's /health); with a second argument it first forks a long-lived
# grandchild and writes its pid there, as vLLM forks its engine core.
FAKE_ENGINE = """
import http.server, subprocess, sys
if len(sys.argv) > 2:
    core = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(sys.argv[2], "w").write(str(core.pid))
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self): self.send_response(200); self.end_headers()
    def log_message(self, *args): pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Health).serve_forever()
"""


class FakeEngine(VLLMServer):
    """The real supervisor over FAKE_ENGINE instead of vLLM; ``core_pid_file`` asks for the grandchild."""

    core_pid_file: Path | None = None

    def command(self) -> list[str]:
        extra = [str(self.core_pid_file)] if self.core_pid_file is not None else []
        return [sys.executable, "-c", FAKE_ENGINE, str(self.settings.port), *extra]


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


def _eventually(check: Callable[[], bool], *, within_s: float = 90.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return check()


@pytest.fixture
def engine(tmp_path: Path):
    """A started FakeEngine whose supervisor probes often and calls two failed probes over 1 s a hang."""
    settings = VLLMSettings(
        port=_free_port(), startup_timeout_s=60, health_interval_s=0.2, health_timeout_s=0.5, hang_probes=2,
        hang_timeout_s=1.0,
    )  # fmt: skip
    server = FakeEngine(model_path=tmp_path, served_name="m", settings=settings, log_path=tmp_path / "vllm.log")
    server.core_pid_file = tmp_path / "core.pid"
    server.start()
    yield server
    server.stop()


def test_a_stopped_server_is_killed_with_its_group_and_restarted(engine: FakeEngine, capsys) -> None:
    hung, core = engine.pid, int(engine.core_pid_file.read_text())  # type: ignore[union-attr]
    assert hung is not None
    os.kill(hung, signal.SIGSTOP)  # alive, pid unchanged, never answers again
    assert _eventually(lambda: engine.restarts == 1 and engine.is_ready()), "the hung server was not restarted"
    assert engine.hangs == 1 and engine.pid != hung
    assert engine.last_restart_reason is not None and "stopped answering" in engine.last_restart_reason
    assert "vLLM stopped answering for" in capsys.readouterr().err
    assert not _alive(hung) and _eventually(lambda: not _alive(core)), "the hung server's group was left behind"


def test_a_killed_server_is_restarted_and_what_it_forked_is_ended(engine: FakeEngine) -> None:
    first, core = engine.pid, int(engine.core_pid_file.read_text())  # type: ignore[union-attr]
    assert first is not None
    os.kill(first, signal.SIGKILL)  # a crash, as the supervisor sees one
    assert _eventually(lambda: engine.restarts == 1 and engine.is_ready()), "the dead server was not restarted"
    assert engine.pid != first and engine.hangs == 0
    assert engine.last_restart_reason == f"vLLM exited with code {-signal.SIGKILL}"
    assert _eventually(lambda: not _alive(core)), "the crashed server's forked process was left behind"


def test_stop_ends_the_servers_forked_processes_too(engine: FakeEngine) -> None:
    core = int(engine.core_pid_file.read_text())  # type: ignore[union-attr]
    assert _alive(core)
    engine.stop()
    assert not engine.is_ready()
    assert _eventually(lambda: not _alive(core)), "the server's forked process outlived stop()"


def test_failed_probes_make_a_hang_only_when_enough_of_them_span_the_timeout() -> None:
    watch = HangWatch(probes=3, timeout_s=30.0)
    assert watch.record(False, started=0.0, now=0.1) is None
    assert watch.record(False, started=1.0, now=1.1) is None
    assert watch.record(False, started=2.0, now=2.1) is None  # three quick refusals: too short to be a hang
    assert watch.record(False, started=40.0, now=50.0) == 50.0  # the fourth, 50 s after the first failed


def test_one_answered_probe_starts_the_count_again() -> None:
    watch = HangWatch(probes=2, timeout_s=30.0)
    assert watch.record(False, started=0.0, now=10.0) is None
    assert watch.record(True, started=15.0, now=16.0) is None  # busy and slow, but it answered
    assert watch.record(False, started=21.0, now=31.0) is None  # 31 s after the first failure, yet only one in a row
    assert watch.record(False, started=36.0, now=46.0) is None  # two in a row, but over 25 s
    assert watch.record(False, started=51.0, now=61.0) == 40.0
