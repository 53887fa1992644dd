"""The whole product on the real small models: `helpline ask --json` and `helpline run`."""

from __future__ import annotations

import json
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


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HELPLINE_")}
    return {**env, **extra}


def test_ask_json_cites_the_answering_article(workspace_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "ask", "How long do I have to send back headphones?", "--json",
         "--engine", "transformers"],
        cwd=workspace_dir, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert set(answer) >= {"answer", "citations", "model", "latency_ms"}
    assert answer["answer"].strip()
    assert answer["model"] == "smollm2-135m-instruct"
    first = answer["citations"][0]
    assert set(first) == {"doc_id", "title", "chunk_id", "score"}
    assert first["doc_id"] == "returns-return-window-and-non-returnable-items"


def test_ask_with_unknown_model_says_what_to_do(workspace_dir: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "ask", "hello", "--json"],
        cwd=workspace_dir, env=_env(HELPLINE_CHAT_MODEL="gpt-9"), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode != 0
    assert "gpt-9" in out.stderr and "helpline models list" in out.stderr
    assert "Traceback" not in out.stderr


def test_run_serves_cited_answers_through_vllm(workspace_dir: Path) -> None:
    gateway, engine, ui = _free_port(), _free_port(), _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "helpline", "run"],
        cwd=workspace_dir,
        env=_env(HELPLINE_GATEWAY__PORT=str(gateway), HELPLINE_VLLM__PORT=str(engine), HELPLINE_UI__PORT=str(ui)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{gateway}"
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(2)
        else:
            pytest.fail("helpline run did not come up in time")
        resp = httpx.post(
            f"{url}/v1/chat/completions",
            json={
                "model": "helpline-support",
                "messages": [{"role": "user", "content": "How do I reset my password?"}],
            },
            timeout=300,
            headers=_auth_header(workspace_dir),
        )
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["choices"][0]["message"]["content"].strip()
        assert body["citations"][0]["doc_id"] == "accounts-reset-your-password"
        assert httpx.get(f"http://127.0.0.1:{ui}/_stcore/health", timeout=10).status_code == 200  # the UI is up
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def _auth_header(workspace_dir: Path) -> dict[str, str]:
    """A fresh customer key, made the way an operator would: `helpline keys create`."""
    out = subprocess.run(
        [sys.executable, "-m", "helpline", "keys", "create", "--role", "customer", "--name", "e2e", "--json"],
        cwd=workspace_dir, env=_env(), capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {"Authorization": f"Bearer {json.loads(out.stdout)['key']}"}
