"""Start the Streamlit app as a subprocess (what `helpline run` calls next to the gateway)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from helpline.platform.errors import EngineError, MissingDependencyError

APP = Path(__file__).with_name("app.py")


def streamlit_command(port: int, *, host: str = "127.0.0.1") -> list[str]:
    """The command line that serves the app headless on ``host:port``."""
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(port),
        "--server.address", host,
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.maxUploadSize", "20",
        "--browser.gatherUsageStats", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
    ]  # fmt: skip


def start_streamlit(
    gateway_url: str,
    port: int,
    *,
    host: str = "127.0.0.1",
    log_path: Path | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> subprocess.Popen:
    """Serve the UI on ``host:port``, talking to the gateway at ``gateway_url``.

    The caller owns the process, which leads its own process group: stop it with ``terminate()`` (and
    ``wait()``), or signal the group. ``preexec_fn`` runs in the child before Streamlit starts (`helpline
    run` passes one that ties the child's life to its own). Output goes to ``log_path`` when given, else
    it is discarded.
    """
    if importlib.util.find_spec("streamlit") is None:
        raise MissingDependencyError("streamlit is not installed", hint="pip install 'helpline[ui]'")
    env = {**os.environ, "HELPLINE_UI__GATEWAY_URL": gateway_url.rstrip("/")}
    if log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        out = log_path.open("ab")
    else:
        out = subprocess.DEVNULL
    try:
        return subprocess.Popen(
            streamlit_command(port, host=host),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches the parent, which stops the UI in its order
            preexec_fn=preexec_fn,
        )
    finally:
        if log_path is not None:
            out.close()  # the child keeps its own descriptor


def wait_until_ready(process: subprocess.Popen, url: str, *, timeout_s: float = 60.0) -> None:
    """Block until the app answers at ``url`` (its /_stcore/health), or raise if it exits or times out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EngineError(f"the UI exited at start with code {process.returncode}", hint="see its log")
        try:
            if httpx.get(f"{url.rstrip('/')}/_stcore/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise EngineError(f"the UI did not answer at {url} within {timeout_s:.0f} s", hint="see its log")
