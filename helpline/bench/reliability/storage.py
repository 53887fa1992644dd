"""The fault scenarios about what is written to disk (see ``faults.py`` for the engine's):

- ``gateway_killed``: chats and feedback are written from several clients at once; the gateway process
  gets SIGKILL in the middle. After a restart every write a client saw acknowledged (a 200) must be in
  the database, and ``PRAGMA integrity_check`` must say ok.
- ``disk_full``: a second stack whose whole workspace sits on a small tmpfs (a loop-mounted image where
  tmpfs cannot be mounted; skipped where neither can, e.g. without root) is filled to the last byte.
  Writes must fail with an error that says the disk is full, no acknowledged write may be lost, the
  processes must live on, and once space is freed the same stack must write again with every database intact.

(``kb_sync_killed`` is in ``kb_sync.py``.)
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx

from helpline.bench.reliability.harness import LiveHelpline, copy_workspace
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import hash_key

MODEL = "helpline-support"
QUESTION = "How do I return an item?"
FULL_WORDS = ("disk", "space", "storage", "full")


# what was acknowledged, and what is there ------------------------------------------------------


def missing_writes(
    acked_turns: set[str], acked_feedback: set[tuple[str, str]], turns: set[str], feedback: set[tuple[str, str]]
) -> dict[str, list]:
    """Acknowledged writes the database does not hold: turns by response id, feedback by (response id, comment)."""
    return {"turns": sorted(acked_turns - turns), "feedback": sorted(acked_feedback - feedback)}


def read_only(db: Path) -> sqlite3.Connection:
    """A connection that writes nothing to ``db`` (the bench must not be what fills a full disk)."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def stored_writes(db: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """The turns (response ids) and feedback ((response id, comment)) in the gateway database ``db``."""
    with closing(read_only(db)) as con:
        turns = {r[0] for r in con.execute("SELECT response_id FROM conversations")}
        feedback = {(r[0], r[1]) for r in con.execute("SELECT response_id, comment FROM feedback")}
    return turns, feedback


def integrity(db: Path) -> str:
    """SQLite's own verdict on a database file ("ok", or what is wrong)."""
    with closing(sqlite3.connect(db, timeout=30)) as con:
        return "; ".join(r[0] for r in con.execute("PRAGMA integrity_check"))[:500]


def databases(workspace: Path) -> list[Path]:
    return sorted(p for p in workspace.rglob("*") if p.suffix in (".sqlite", ".sqlite3") and p.is_file())


# gateway killed during writes ---------------------------------------------------------------------


class Writers:
    """Clients writing turns (non-streamed chats) and feedback until stopped; records what was acknowledged."""

    def __init__(self, live: LiveHelpline) -> None:
        self.url, self.key = live.base_url, live.keys["customer"]
        self.turns: list[str] = []
        self.feedback: list[tuple[str, str]] = []
        self.failed = 0
        self.stop = threading.Event()

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.key}"}, timeout=120)

    def chat(self, client: httpx.Client) -> bool:
        """One turn; False when the connection failed (the gateway is gone: this client stops)."""
        body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
        try:
            resp = client.post("/v1/chat/completions", json=body)
        except httpx.HTTPError:
            self.failed += 1
            return False
        if resp.status_code == 200:
            self.turns.append(resp.json()["id"])
        return True

    def rate(self, client: httpx.Client, n: int, worker: int) -> bool:
        """One rating of an acknowledged turn, with a comment that names it; False as for ``chat``."""
        rid, comment = self.turns[n % len(self.turns)], f"bench-{worker}-{n}"
        try:
            resp = client.post("/v1/feedback", json={"response_id": rid, "rating": "up", "comment": comment})
        except httpx.HTTPError:
            self.failed += 1
            return False
        if resp.status_code == 200:
            self.feedback.append((rid, comment))
        return True

    def chats(self) -> None:
        with self.client() as client:
            while not self.stop.is_set() and self.chat(client):
                pass

    def ratings(self, worker: int) -> None:
        with self.client() as client:
            n = 0
            while not self.stop.is_set() and self.rate(client, n, worker):
                n += 1


def gateway_killed(
    live: LiveHelpline, *, write_s: float = 5.0, chat_clients: int = 2, feedback_clients: int = 3
) -> dict[str, Any]:
    """SIGKILL the gateway after ``write_s`` of concurrent chats and feedback; restart; count what is missing."""
    writers = Writers(live)
    with writers.client() as client:
        for _ in range(3):  # turns to rate from the start
            writers.chat(client)
    if not writers.turns:
        return {"error": "no chat was answered before the fault", "passed": False}
    threads = [threading.Thread(target=writers.chats) for _ in range(chat_clients)]
    threads += [threading.Thread(target=writers.ratings, args=(i,)) for i in range(feedback_clients)]
    for t in threads:
        t.start()
    time.sleep(write_s)
    killed = live.kill_gateway()
    writers.stop.set()
    for t in threads:
        t.join(timeout=150)
    restart_s = live.start()
    db = gateway_db(Workspace.at(live.workspace))
    turns, feedback = stored_writes(db)
    missing = missing_writes(set(writers.turns), set(writers.feedback), turns, feedback)
    verdict = integrity(db)
    serving = LiveWrites(live).turn_and_feedback()
    checks = {
        "acknowledged_turns_kept": not missing["turns"],
        "acknowledged_feedback_kept": not missing["feedback"],
        "integrity_ok": verdict == "ok",
        "writes_after_restart": serving == (200, 200),
        "engine_went_with_gateway": not killed["orphans"],
    }
    return {
        "acknowledged": {"turns": len(writers.turns), "feedback": len(writers.feedback)},
        "requests_cut_by_the_kill": writers.failed,
        "missing": missing,
        "integrity_check": verdict,
        **killed,
        "restart_s": round(restart_s, 1),
        "checks": checks,
        "passed": all(checks.values()),
    }


# disk full ----------------------------------------------------------------------------------------


class Unavailable(Exception):
    """A size-limited folder cannot be made on this machine (the scenario is skipped, with this reason)."""


def mount_small(folder: Path, size_mb: int) -> str:
    """Mount a filesystem of ``size_mb`` at ``folder``: tmpfs, else an ext4 image on a loop device."""
    if os.geteuid() != 0:
        raise Unavailable("mounting a size-limited folder needs root")
    tmpfs = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(folder)],
                           capture_output=True, text=True)  # fmt: skip
    if tmpfs.returncode == 0:
        return "tmpfs"
    image = folder.with_suffix(".img")
    with image.open("wb") as f:
        f.truncate(size_mb * 1024 * 1024)
    steps = [["mkfs.ext4", "-q", "-F", str(image)], ["mount", "-o", "loop", str(image), str(folder)]]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            raise Unavailable(f"tmpfs: {tmpfs.stderr.strip()}; loop image: {done.stderr.strip()}")
    return "loop"


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True)
    folder.with_suffix(".img").unlink(missing_ok=True)


def fill(folder: Path) -> Path:
    """A file that takes every free byte of ``folder``'s filesystem (1 MiB writes, then 4 KiB, then bytes)."""
    path = folder / "filler"
    with path.open("wb", buffering=0) as f:
        for size in (1 << 20, 4096, 1):
            try:
                while True:
                    f.write(b"\0" * size)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    return path


class LiveWrites:
    """One of each kind of write a stack takes, with its status and the message a client reads."""

    def __init__(self, live: LiveHelpline) -> None:
        self.live = live

    def post(self, path: str, body: dict, role: str) -> tuple[int, str, dict]:
        headers = {"Authorization": f"Bearer {self.live.keys[role]}"}
        try:
            resp = httpx.post(f"{self.live.base_url}{path}", json=body, headers=headers, timeout=180)
        except httpx.HTTPError as e:
            return 0, f"{type(e).__name__}: {e}"[:300], {}
        data = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else {}
        return resp.status_code, str(data.get("error", {}).get("message", ""))[:300], data

    def turn_and_feedback(self) -> tuple[int, int]:
        chat = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
        status, _, data = self.post("/v1/chat/completions", chat, "customer")
        if status != 200:
            return status, 0
        return status, self.post("/v1/feedback", {"response_id": data["id"], "rating": "up"}, "customer")[0]

    def each(self, tag: str, *, rate: str | None = None) -> dict[str, dict[str, Any]]:
        """A chat, a rating (of that chat, or of ``rate`` when it failed), a new key and a document upload."""
        chat = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 8}
        out: dict[str, dict[str, Any]] = {}
        status, message, data = self.post("/v1/chat/completions", chat, "customer")
        out["chat"] = {"status": status, "message": message, "id": data.get("id")}
        rid = data.get("id") or rate or ""
        comment = f"disk-{tag}"
        status, message, _ = self.post("/v1/feedback", {"response_id": rid, "rating": "down", "comment": comment},
                                       "customer")  # fmt: skip
        out["feedback"] = {"status": status, "message": message, "id": rid, "comment": comment}
        status, message, data = self.post("/admin/keys", {"role": "customer", "name": f"disk-{tag}"}, "admin")
        out["key"] = {"status": status, "message": message, "key": data.get("key")}
        doc = {"doc_id": f"bench-disk-{tag}", "title": f"Disk {tag}", "text": f"A note written {tag}.",
               "access": "public"}  # fmt: skip
        status, message, _ = self.post("/admin/kb/documents", {"documents": [doc]}, "staff")
        out["kb_upload"] = {"status": status, "message": message, "doc_id": doc["doc_id"]}
        return out


def _kept(live: LiveHelpline, writes: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """Whether each write acknowledged while the disk was full is there now."""
    db = gateway_db(Workspace.at(live.workspace))
    turns, feedback = stored_writes(db)
    staff = {"Authorization": f"Bearer {live.keys['staff']}"}
    docs = httpx.get(f"{live.base_url}/admin/kb/documents", headers=staff, timeout=60).json()["documents"]
    present = {
        "chat": writes["chat"]["id"] in turns,
        "feedback": (writes["feedback"]["id"], writes["feedback"]["comment"]) in feedback,
        "key": bool(writes["key"]["key"]) and _key_known(db, writes["key"]["key"]),
        "kb_upload": any(d["doc_id"] == writes["kb_upload"]["doc_id"] for d in docs),
    }
    return {kind: present[kind] for kind, w in writes.items() if w["status"] == 200}


def _key_known(db: Path, key: str) -> bool:
    with closing(read_only(db)) as con:
        return con.execute("SELECT 1 FROM api_keys WHERE key_hash = ?", (hash_key(key),)).fetchone() is not None


def _storage_check(live: LiveHelpline) -> bool | None:
    """/ready's storage check (None when /ready did not answer with one)."""
    try:
        checks = httpx.get(f"{live.base_url}/ready", timeout=10).json().get("checks", {})
    except (httpx.HTTPError, ValueError):
        return None
    storage = checks.get("storage")
    return None if storage is None else bool(storage.get("ok"))


def disk_full(live: LiveHelpline, *, size_mb: int = 48) -> dict[str, Any]:
    """A second stack on a ``size_mb`` filesystem, filled up, then freed (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="helpline-disk-full-") as tmp:
        mount = Path(tmp) / "disk"
        mount.mkdir()
        try:
            how = mount_small(mount, size_mb)
        except Unavailable as e:
            return {"skipped": str(e), "passed": False}
        try:
            return {"filesystem": f"{how}, {size_mb} MiB", **_fill_and_free(live, mount, Path(tmp) / "run.log")}
        finally:
            unmount(mount)


def _fill_and_free(live: LiveHelpline, mount: Path, log: Path) -> dict[str, Any]:
    copy_workspace(live.workspace, mount / "ws" / ".helpline")
    with LiveHelpline(live.options, root=mount / "ws", log_path=log) as full:
        before = LiveWrites(full).each("before")
        engine = full.vllm_pid
        filler = fill(mount)
        during = LiveWrites(full).each("full", rate=before["chat"]["id"])
        survived = full.gateway_pid is not None and full.vllm_pid == engine
        storage_ready = _storage_check(full)
        logged = [line[:300] for line in full.log_tail(20000).splitlines() if "rror" in line][-6:]
        filler.unlink()
        kept = _kept(full, during)
        after = LiveWrites(full).each("after")
        ready = full.ready()
    verdicts = {str(p.relative_to(mount)): integrity(p) for p in databases(mount / "ws")}
    refused = {k: w for k, w in during.items() if w["status"] != 200}
    checks = {
        "writes_before_ok": all(w["status"] == 200 for w in before.values()),
        "refusals_say_disk_full": all(
            any(word in w["message"].lower() for word in FULL_WORDS) for w in refused.values()
        ),
        "acknowledged_writes_kept": all(kept.values()),
        "processes_survived": survived,
        "ready_reports_storage_full": storage_ready is False,
        "writes_after_freeing_ok": all(w["status"] == 200 for w in after.values()) and ready,
        "databases_intact": all(v == "ok" for v in verdicts.values()),
    }
    return {
        "while_full": {k: {"status": w["status"], "message": w["message"]} for k, w in during.items()},
        "errors_logged_while_full": logged,
        "acknowledged_while_full_kept": kept,
        "after_freeing": {k: w["status"] for k, w in after.items()},
        "integrity_check": verdicts,
        "checks": checks,
        "passed": all(checks.values()),
    }
