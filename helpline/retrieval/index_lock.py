"""One writer per knowledge-base index, across processes: an ``fcntl.flock`` on a lock file beside the index.

A serving gateway holds its index for as long as it runs (``serve``): embedded Chroma, the sync ledger and the BM25
files are not made to be written by two processes at once, and the gateway's open Chroma client would not
see another process's writes. Any process may read the index (``kb search``, ``kb list``, evaluations);
one that wants to write it takes the lock for the write, and while a gateway holds it is refused with a
hint to write through the gateway's admin API instead. The lock file records who holds it (pid and what),
so that the refusal can say. The kernel drops the lock when its holder exits, however it exits.

A gateway that starts while a `kb sync` writes waits for it; one that starts while another gateway serves
the same index (a second `helpline run`, `helpline bench serving`) serves it read-only: its reads work,
and its writes are refused naming the gateway that holds the index.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from helpline.platform.errors import HelplineError

#: What a serving process calls itself in the lock file (the refusal's hint depends on it).
GATEWAY = "gateway"


class IndexBusyError(HelplineError):
    """Another process holds the knowledge-base index that this one wants to write."""

    http_status = 409


class IndexLock:
    """The writer lock of one index (re-entrant within this object; exclusive between processes)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._depth = 0  # writes in progress
        self._held = False  # taken with ``hold``: kept until ``release``

    def __del__(self) -> None:  # a lock nobody can release any more is released
        with suppress(OSError, AttributeError, TypeError):  # at interpreter exit the kernel releases it anyway
            self._unlock()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def hold(self, holder: str = GATEWAY) -> None:
        """Take the lock until ``release`` or the end of the process (what a serving gateway does);
        IndexBusyError if another process holds it."""
        if self._fd is None:
            self._acquire(holder)
        self._held = True

    def serve(self, *, wait_s: float = 300.0) -> bool:
        """Hold the lock while this process serves. A writer that holds it is waited for, up to ``wait_s``
        (then IndexBusyError); when another serving process holds it, this one holds nothing and returns
        False (it serves read-only)."""
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.hold(GATEWAY)
                return True
            except IndexBusyError:
                if self._holder().get("holder") == GATEWAY:
                    return False
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.1)

    def release(self) -> None:
        """Give up a ``hold`` (a write in progress keeps the lock until it ends)."""
        self._held = False
        if self._depth == 0:
            self._unlock()

    @contextmanager
    def writing(self, writer: str = "") -> Iterator[None]:
        """Hold the lock for one write: at once, or IndexBusyError naming the process that holds it."""
        if self._fd is None:
            self._acquire(writer or _command_line())
        with self._write():
            yield

    @contextmanager
    def attempt(self) -> Iterator[bool]:
        """Like ``writing``, but yields False instead of raising when another process holds the lock
        (for writes a reader may skip, such as saving a BM25 index it rebuilt)."""
        if self._fd is None:
            try:
                self._acquire(_command_line())
            except IndexBusyError:
                yield False
                return
        with self._write():
            yield True

    @contextmanager
    def _write(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            if self._depth == 0 and not self._held:
                self._unlock()

    def _acquire(self, who: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise self._busy() from None
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "holder": who}).encode())
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor of the lock releases it
            self._fd = None

    def _holder(self) -> dict:
        """What the process holding the lock wrote into the lock file (``pid``, ``holder``)."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def _busy(self) -> IndexBusyError:
        info = self._holder()
        pid, holder = info.get("pid", "?"), str(info.get("holder", "another process"))
        where = self.path.parent
        if holder == GATEWAY:
            return IndexBusyError(
                f"the knowledge base in {where} is held by a running gateway (pid {pid}); "
                "another process may read it but not write it",
                hint="make the change through the gateway: `POST /admin/kb/sync` with an admin key (or "
                "`POST /admin/kb/documents`), or stop the gateway first",
            )
        return IndexBusyError(
            f"the knowledge base in {where} is being written by another process (pid {pid}: {holder})",
            hint="wait for it to finish, then try again",
        )


def _command_line() -> str:
    """This process as a holder's name: `helpline kb sync articles/`, say."""
    args = [Path(sys.argv[0]).name, *sys.argv[1:]] if sys.argv and sys.argv[0] else ["python"]
    return " ".join(args)[:200]
