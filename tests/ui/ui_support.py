"""Helpers for the UI tests: serve a gateway in a thread, drive the app with AppTest."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP = Path(__file__).resolve().parents[2] / "helpline" / "ui" / "app.py"


@dataclass
class Served:
    url: str
    stop: Any


def serve(app: Any) -> Served:
    """Serve an ASGI app on 127.0.0.1:<free port> in a daemon thread until ``stop()``."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the test gateway did not start")
        threading.Event().wait(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    return Served(f"http://127.0.0.1:{port}", stop)


def with_versions(gateway: Any) -> Any:
    """Give the fake gateway's knowledge base the registry (as the real gateway's has), so that
    syncs record knowledge-base versions; the fake documents become version 1."""
    from helpline.testing.serving import DOCS

    owned = gateway.kb  # an OwnedKB: the KnowledgeBase lives on its own thread
    owned.kb.registry = gateway.registry
    owned.call(owned.kb.clear)
    owned.sync(DOCS)
    assert [v.id for v in gateway.registry.kb_versions()] == [1]
    return gateway


def mount_console(app: Any) -> Any:
    """The gateway mounts the console router itself; this checks it did (and mounts nothing twice)."""
    assert any(getattr(r, "path", "").startswith("/console") for r in app.routes), "console router not mounted"
    return app


@dataclass
class LiveGateway:
    url: str
    gateway: Any  # helpline.testing.serving.Gateway

    def key(self, role: str) -> str:
        return self.gateway.keys[role]


def sign_in(key: str, *, timeout: float = 30) -> Any:
    """An AppTest of the whole app, signed in with ``key`` through the sign-in form."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(APP), default_timeout=timeout).run()
    at.text_input(key="sign_in_key").input(key)
    button(at, "Sign in").click()
    return at.run()


def button(at: Any, label: str) -> Any:
    """The (form submit) button labelled ``label``."""
    found = [b for b in at.button if b.label == label]
    assert found, f"no button {label!r}; buttons: {[b.label for b in at.button]}"
    return found[0]


def texts(at: Any) -> str:
    """Everything the page shows as text (markdown, captions, alerts), to search in."""
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption]
    parts += [e.value for e in at.error] + [w.value for w in at.warning] + [i.value for i in at.info]
    parts += [s.value for s in at.success] + [t.value for t in at.title]
    return "\n".join(str(p) for p in parts)
