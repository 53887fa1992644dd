"""Child processes that must not outlive the command that started them.

`helpline run` owns long-lived children (vLLM, the Streamlit UI). Each starts in its own process
group (``start_new_session=True``), so stopping one reaches every process it forked (vLLM's engine
core), and with ``die_with_parent`` as its ``preexec_fn``, so the kernel stops it when the parent dies
without cleaning up (SIGKILL, a crash). ``run_until_stopped`` turns SIGTERM and SIGHUP into an
exception in the parent, as Ctrl-C is turned into KeyboardInterrupt, so the parent's own cleanup runs
when systemd, `docker stop` or `kill` stops it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable

PR_SET_PDEATHSIG = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def die_with_parent() -> None:
    """``preexec_fn`` for a child, Linux only: it gets SIGTERM when its parent dies (no orphan holding a
    port and gigabytes of memory). The kernel's "parent" is the thread that started the child, so start
    children from a thread that lives as long as they should (the main thread, or their supervisor)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    """Send ``sig`` to ``proc``'s process group, or to ``proc`` alone when it leads none; gone is fine."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:  # it leads no group (started without a session of its own), or all of it is gone
        if proc.poll() is None:
            proc.send_signal(sig)


def kill_group(proc: subprocess.Popen) -> int:
    """SIGKILL ``proc`` and its group and reap it. The one signal a stopped (SIGSTOP) or deadlocked
    process cannot ignore or postpone; returns its exit status."""
    signal_group(proc, signal.SIGKILL)
    return proc.wait()


def stop_group(proc: subprocess.Popen, *, timeout_s: float = 30.0) -> int:
    """Stop ``proc`` and what it forked: SIGTERM to the group (with SIGCONT, so a stopped process can act
    on it), SIGKILL after ``timeout_s``, then SIGKILL to whatever of the group is left; returns its status."""
    if proc.poll() is None:
        signal_group(proc, signal.SIGTERM)
        signal_group(proc, signal.SIGCONT)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            return kill_group(proc)
    signal_group(proc, signal.SIGKILL)  # grandchildren that outlived their leader
    return proc.wait()


class StopRequested(BaseException):
    """SIGTERM or SIGHUP arrived. A BaseException, as KeyboardInterrupt is, so no ``except Exception``
    on the way up swallows it and every ``finally`` runs."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stop(signum: int, frame: object) -> None:
    if signum != signal.SIGTERM:
        # SIGHUP becomes SIGTERM: a server running in the foreground (uvicorn) handles SIGTERM itself, shuts
        # down gracefully and raises it again once it has put this handler back.
        signal.raise_signal(signal.SIGTERM)
        return
    for sig in STOP_SIGNALS:  # the cleanup that follows must not be cut short by a second signal
        signal.signal(sig, signal.SIG_IGN)
    raise StopRequested(signum)


def run_until_stopped(serve: Callable[[], None], stop: Callable[[], None]) -> int | None:
    """Run ``serve`` with SIGTERM and SIGHUP handled as Ctrl-C is, then ``stop`` what it started, however it
    ended (returned, raised, interrupted, signalled).

    Returns the signal that stopped it, or None when ``serve`` returned; KeyboardInterrupt and errors
    propagate after ``stop``. Without this, SIGTERM's default action ends the process on the spot (uvicorn
    even raises it again after its own graceful shutdown) and no ``finally`` stops the children.
    """
    main = threading.current_thread() is threading.main_thread()  # only the main thread may set handlers
    previous = {sig: signal.signal(sig, _raise_stop) for sig in STOP_SIGNALS} if main else {}
    try:
        try:
            serve()
        except StopRequested as e:
            return e.signum
        finally:
            stop()
        return None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
