"""The ``kb_sync_killed`` fault scenario: `helpline kb sync` is SIGKILLed part-way through a folder (in a
scratch workspace that shares the live one's embedder: the serving gateway holds its own index, and a
sync there is refused). The next sync must complete it; the knowledge base then holds exactly the
folder's documents, each chunk once, nothing unfinished, and answers a search.
"""

from __future__ import annotations

import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any

from helpline.bench.reliability.harness import LiveHelpline, helpline_command, helpline_env
from helpline.platform.registry import Registry
from helpline.platform.settings import Settings
from helpline.platform.workspace import Workspace
from helpline.retrieval import SAMPLE_KB
from helpline.retrieval.factory import index_paths
from helpline.retrieval.stores.chroma import ChromaStore

QUESTION = "How do I return an item?"


def kb_sync_killed(live: LiveHelpline, *, kill_at_docs: int = 10) -> dict[str, Any]:
    """SIGKILL `helpline kb sync` once ``kill_at_docs`` documents are done, in a scratch workspace that
    shares the live one's embedder; sync again; check the knowledge base against the folder."""
    with tempfile.TemporaryDirectory(prefix="helpline-kb-killed-") as tmp:
        workspace, folder = Path(tmp) / ".helpline", Path(tmp) / "kb"
        registry = Registry(Workspace.at(workspace).ensure().registry_db)
        for model in Registry(live.workspace / "registry.sqlite").list_models(kind="embedder"):
            registry.register_model(model.name, kind="embedder", path=model.path)
        folder.mkdir()
        for path in SAMPLE_KB.glob("*.md"):
            shutil.copy(path, folder / path.name)
        ledger, _ = index_paths(Settings.model_construct(), Workspace.at(workspace))
        sync = [sys.executable, "-m", "helpline", "kb", "sync", str(folder), "--json"]
        proc = subprocess.Popen(sync, cwd=tmp, env=helpline_env(workspace, {}), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)  # fmt: skip
        while proc.poll() is None and ledger_rows(ledger)[0] < kill_at_docs:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        code = proc.wait()
        done_at_kill, pending_at_kill = ledger_rows(ledger)
        started = time.perf_counter()
        again = helpline_command(workspace, "kb", "sync", str(folder), "--json", cwd=Path(tmp))
        resync_s = time.perf_counter() - started
        stats = _json(helpline_command(workspace, "kb", "stats", "--json", cwd=Path(tmp)))
        hits = _json(helpline_command(workspace, "kb", "search", QUESTION, "--json", cwd=Path(tmp))).get("results", [])
        chunk_ids = [c.chunk_id for c in ChromaStore.embedded(workspace / "indexes" / "chroma", "helpline-kb").chunks()]
    files = len(list(SAMPLE_KB.glob("*.md")))
    checks = {
        "killed_mid_way": code == -signal.SIGKILL and 0 < done_at_kill < files,
        "resync_succeeded": again.returncode == 0,
        "documents_match_folder": stats.get("documents") == files and stats.get("unfinished") == [],
        "each_chunk_once": len(chunk_ids) == len(set(chunk_ids)) == stats.get("chunks"),
        "search_answers": bool(hits) and hits[0]["chunk"]["doc_id"].startswith("returns-"),
    }
    return {
        "documents": files,
        "done_at_kill": done_at_kill,
        "pending_at_kill": pending_at_kill,
        "resync_s": round(resync_s, 1),
        "stats_after": {k: stats.get(k) for k in ("documents", "chunks", "unfinished")},
        "checks": checks,
        "passed": all(checks.values()),
    }


def ledger_rows(ledger: Path) -> tuple[int, int]:
    """(documents done, documents pending) in a sync ledger another process is writing."""
    if not ledger.exists():
        return 0, 0
    try:
        with closing(sqlite3.connect(ledger, timeout=5)) as con:
            rows = dict(con.execute("SELECT state = 'ok', COUNT(*) FROM documents GROUP BY state = 'ok'").fetchall())
    except sqlite3.Error:  # the table is not there yet
        return 0, 0
    return rows.get(1, 0), rows.get(0, 0)


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    try:
        return json.loads(done.stdout)
    except ValueError:
        return {"error": done.stderr[-500:]}
