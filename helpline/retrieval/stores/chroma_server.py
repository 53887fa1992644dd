"""Run Chroma as a separate server process (`chroma run`), for `retrieval.store: server`.

The server binds to loopback: like vLLM, Chroma is never exposed directly; the gateway owns access.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from helpline.platform.errors import ConfigError


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ChromaServer:
    """A supervised `chroma run --path DIR --port P` subprocess."""

    def __init__(self, path: str | Path, *, port: int, host: str = "127.0.0.1", log: str | Path | None = None) -> None:
        self.path, self.port, self.host = Path(path), port, host
        self.log = Path(log) if log else self.path.with_suffix(".log")
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, *, timeout_s: float = 60.0) -> ChromaServer:
        """Start the server and wait until it answers its heartbeat."""
        exe = shutil.which("chroma") or str(Path(sys.executable).with_name("chroma"))
        if not Path(exe).exists():
            raise ConfigError("the `chroma` command is not installed", hint="pip install 'helpline[retrieval]'")
        self.path.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [exe, "run", "--path", str(self.path), "--host", self.host, "--port", str(self.port)],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ConfigError(
                    f"the Chroma server exited with code {self._process.returncode}", hint=f"see {self.log}"
                )
            if self.ready():
                return self
            time.sleep(0.25)
        self.stop()
        raise ConfigError(f"the Chroma server did not answer within {timeout_s:.0f} s", hint=f"see {self.log}")

    def ready(self) -> bool:

        try:
            return httpx.get(f"http://{self.host}:{self.port}/api/v2/heartbeat", timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 10 s)."""
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> ChromaServer:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
