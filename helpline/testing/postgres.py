"""A throwaway PostgreSQL server for tests and measurements, from Debian's ``postgresql`` package.

``PostgresServer`` makes a cluster in a new temporary folder (initdb, trust authentication, loopback on a free port,
its socket in the folder), starts it with ``pg_ctl`` and hands out fresh databases (``new_database``). PostgreSQL
refuses to run as root, so as root (CI) the folder is given to the ``postgres`` user and the programs run through
``runuser -u postgres``. Tests skip where ``postgres_bin()`` finds no binaries: ``apt-get install postgresql``.
``open_at_once`` starts gateway replicas' stores on one database at the same moment (SQLite or PostgreSQL).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from helpline.platform.lazy_imports import require
from helpline.retrieval.stores.chroma_server import free_port

INSTALL = "apt-get install postgresql"


def postgres_bin() -> Path | None:
    """The folder of ``initdb`` and ``pg_ctl``: on the PATH, or where Debian puts them; None when not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


class PostgresServer:
    """One cluster; ``durable=False`` (tests) turns off fsync, so a test database costs no disk flushes."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin = postgres_bin()
        if self.bin is None:
            raise RuntimeError(f"PostgreSQL is not installed ({INSTALL})")
        self.durable = durable
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="helpline-postgres-"))
        self.data = self.folder / "data"
        self._as_root = os.geteuid() == 0

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy address of ``database`` (the psycopg 3 driver; user ``postgres``, no password)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> PostgresServer:
        if self._as_root:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                  "--no-sync")  # fmt: skip
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-o", options, "-w",
                  "-t", "60", "start")  # fmt: skip
        return self

    def new_database(self) -> str:
        """A new empty database; returns its address."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        psycopg = require("psycopg", "shared")
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """Stop the server (every connection to it is cut) and start it again with the same options."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "postgres.log"), "-m", "fast", "-w",
                  "-t", "60", "restart")  # fmt: skip

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)

    def log(self) -> str:
        path = self.folder / "postgres.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bin / program), *args]
        if self._as_root:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        done = subprocess.run(argv, cwd=self.folder, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr.strip() or done.stdout.strip()}\n{self.log()}")


#: One replica coming up: open the store at the agreed moment (so that all of them race), then write a key.
_REPLICA = """
import sys, time
from pathlib import Path
from helpline.serving.gateway.store import GatewayStore
path, url, name, start_at = sys.argv[1], sys.argv[2] or None, sys.argv[3], float(sys.argv[4])
time.sleep(max(0.0, start_at - time.time()))
GatewayStore(Path(path), url=url, busy_timeout_s=30).create_key("customer", name=name, actor="replica")
"""


def open_at_once(path: Path, url: str | None, n: int, *, delay_s: float = 3.0) -> list[tuple[int, str]]:
    """``n`` processes that each open the gateway database (``path``, or ``url``) at the same moment, as replicas
    starting together do, and create a key named ``replica-I``; returns each one's exit code and error output."""
    start_at = str(time.time() + delay_s)
    argv = [sys.executable, "-c", _REPLICA, str(path), url or ""]
    procs = []
    for i in range(n):
        command = [*argv, f"replica-{i}", start_at]
        procs.append(subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    return [(p.wait(120), p.stderr.read() if p.stderr else "") for p in procs]
