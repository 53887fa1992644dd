"""Knowledge-base connectors: a help-centre export (``KIND:PATH``: zendesk, intercom, confluence, notion) or a website
(``https://...``) that the gateway syncs on a schedule, so staff keep the knowledge base current without an engineer.

Connectors are rows of the gateway's database (``store_connectors``), added with `helpline kb connect`, the admin API
or the Knowledge base page. The gateway that holds the knowledge base's writer lock runs the ones that are due, one
at a time, in a worker thread, and records each run's outcome; the others (read-only replicas) leave them to it.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from helpline.platform.errors import ConfigError, HelplineError
from helpline.retrieval.ingest.exports import KINDS

log = logging.getLogger("helpline.gateway")
#: How often a gateway looks for due connectors.
CHECK_EVERY_S = 60.0
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")


def check_connector(name: str, source: str, every_s: float) -> None:
    """ConfigError naming what is wrong with a connector before it is saved."""
    if not _NAME.fullmatch(name):
        raise ConfigError(f"connector name {name!r} is not a slug", hint="lowercase letters, digits and dashes")
    web = source.startswith(("http://", "https://"))
    if not web and source.split(":", 1)[0] not in KINDS:
        raise ConfigError(
            f"{source!r} is not a connector source",
            hint=f"use {' or '.join(k + ':PATH' for k in KINDS)} (an export on the gateway's machine) or https://...",
        )
    if every_s < 300:
        raise ConfigError("a connector runs at most every 5 minutes", hint="e.g. --every 1h or 1d")


def staff_may_connect(source: str) -> str | None:
    """Why a staff key may not add (or change, or remove) a connector to ``source``, or None when it may: staff
    connect public websites; an export reads the gateway's disk and a private address its network, so those are
    an admin's. A host is public when every address it resolves to is global (no loopback, private, link-local or
    reserved one), so a name cannot point the crawler inside."""
    if not source.startswith(("http://", "https://")):
        return "an export connector reads the gateway's disk"
    host = urllib.parse.urlsplit(source).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except (socket.gaierror, UnicodeError):
        return f"{host or source!r} does not resolve from the gateway"
    inside = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_global)
    return f"{host} resolves to a non-public address ({', '.join(inside)})" if inside else None


def due(connectors: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """The connectors whose next run is due (never run, or last run at least ``every_s`` ago), oldest first."""
    ready = [c for c in connectors if c["last_at"] is None or now - c["last_at"] >= c["every_s"]]
    return sorted(ready, key=lambda c: c["last_at"] or 0.0)


def writes_kb(kb: Any) -> bool:
    """Whether this gateway writes its knowledge base (holds the writer lock, or no other process can)."""
    lock = getattr(getattr(kb, "kb", kb), "lock", None)
    return lock is None or lock.held


def run_due(store: Any, kb_admin: Any, *, crawl_state: Path, now: float | None = None) -> list[str]:
    """Sync each due connector through ``kb_admin`` and record its outcome; the names run. One that fails is
    recorded as failed (with its reason) and tried again at its next time."""
    names = []
    for c in due(store.connectors(), time.time() if now is None else now):
        try:
            summary = kb_admin.sync_source(c["source"], crawl_state=crawl_state)
            status = "ok"
        except HelplineError as e:
            summary, status = {"error": e.message, "hint": e.hint}, "failed"
            log.warning("connector %s failed: %s", c["name"], e.message)
        store.connector_ran(c["name"], status=status, summary=summary)
        names.append(c["name"])
    return names
