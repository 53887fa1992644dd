"""`helpline ui`: the app alone, in the foreground (the UI image's command), for a gateway elsewhere; a gateway
address that is no address is refused before Streamlit starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from typer.testing import CliRunner

from helpline.cli.app import app
from helpline.evaluation.load import free_port
from helpline.platform.errors import ConfigError

pytest.importorskip("streamlit")


def test_helpline_ui_serves_the_app_for_the_gateway_it_is_given_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpline", "ui", "--port", str(port), "--gateway-url", "http://gateway.example:8000/"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            raise AssertionError("the app did not answer")
        os.kill(proc.pid, signal.SIGTERM)  # the process is Streamlit itself (exec): it gets the signal
        output, _ = proc.communicate(timeout=30)
        assert "(gateway http://gateway.example:8000)" in output
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_a_gateway_url_that_is_no_address_is_refused() -> None:
    result = CliRunner().invoke(app, ["ui", "--gateway-url", "gateway:8000"])
    assert isinstance(result.exception, ConfigError) and "is not an address" in str(result.exception)
