"""Where an engineer gets training data from a running helpline, read for the forged-turn attacks.

A client sends its own history, so an assistant turn in a request may be one the gateway never gave.
The gateway's rule (``serving/gateway/conversations.py``) is that such a turn never becomes training
data; the attack suite checks the rule where it matters, in what the exports actually contain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from helpline.platform.errors import ConfigError

Send = Callable[..., httpx.Response]


def read_exports(send: Send, role: str, *, workspace: Path | None, reviewed: Iterable[str]) -> dict[str, str]:
    """Every export as JSONL text: the admin route (customer-facing, then with staff-facing rows),
    `helpline conversations export` against the workspace, and the reviewed-examples files the console wrote."""
    sources = {
        "http_export": send(role, "GET", "/admin/conversations/export").text,
        "http_export_staff_facing": send(
            role, "GET", "/admin/conversations/export", params={"staff_facing": "true"}
        ).text,
        "cli_export": cli_export(workspace),
    }
    for path in map(Path, reviewed):
        sources[f"reviewed:{path.name}"] = path.read_text("utf-8") if path.is_file() else ""
    return sources


def cli_export(workspace: Path | None) -> str:
    """`helpline conversations export` against the gateway's workspace, run as an engineer runs it."""
    if workspace is None:
        return ""
    with tempfile.TemporaryDirectory(prefix="helpline-attacks-") as tmp:
        out = Path(tmp) / "export.jsonl"
        env = {**os.environ, "HELPLINE_WORKSPACE": str(workspace)}
        done = subprocess.run(
            [sys.executable, "-m", "helpline", "conversations", "export", str(out)],
            env=env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if done.returncode != 0:
            raise ConfigError(f"`helpline conversations export` failed: {done.stderr[-500:]}", hint="see its output")
        return out.read_text("utf-8")


def look_for(forged: dict[str, Any], response_id: str | None, sources: dict[str, str]) -> dict[str, Any]:
    """Where the forged case's marker stands in the exports: in an exported history (a client-written
    turn became training data: the leak), or only in the final answer (the model repeated it); and in
    which exports this turn's row was found with the customer's own control word (the check was real)."""
    marker, control = forged["marker"], forged["control"]
    exported_in, echoed_in, verified_in = set(), set(), set()
    for name, text in sources.items():
        for line in filter(str.strip, text.splitlines()):
            row = json.loads(line)
            messages = row.get("messages", [])
            history = json.dumps(messages[:-1])
            if marker in history:
                exported_in.add(name)
            elif marker in json.dumps(row):
                echoed_in.add(name)
            mine = row.get("metadata", {}).get("response_id", row.get("response_id")) == response_id
            if mine and control in history:
                verified_in.add(name)
    return {
        "exported_in": sorted(exported_in),
        "echoed_in_answer": sorted(echoed_in),
        "verified_in": sorted(verified_in),
        "verified": bool(verified_in),
    }
