"""A full workspace disk is a clear 507 with Retry-After for every caller, and /ready reports it, instead of
an unexplained 500 (with WAL, even the key check's read fails on a full disk: "disk I/O error")."""

from __future__ import annotations

import errno
import sqlite3
from contextlib import contextmanager

import pytest

from helpline.serving import factory
from helpline.serving.gateway.errors import storage_full, to_error_response
from helpline.serving.gateway.store import GatewayStore
from helpline.testing.serving import Gateway


@contextmanager
def _full_disk(*_args, **_kwargs):
    raise sqlite3.OperationalError("disk I/O error")
    yield  # pragma: no cover


@pytest.mark.parametrize("role", ["customer", "admin"])
def test_a_full_disk_under_the_key_check_is_a_507_saying_storage_is_full(
    gateway: Gateway, role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(GatewayStore, "_connect", _full_disk)
    r = gateway.chat(role, "How do I return an item?")
    assert r.status_code == 507
    assert r.headers["Retry-After"] == "30"
    message = r.json()["error"]["message"]
    assert "storage is full" in message and "nothing was saved" in message
    assert "sqlite" not in message.lower() and "I/O" not in message


def test_a_feedback_write_on_a_full_disk_is_a_507(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> None:
    answer = gateway.chat("customer", "How do I return an item?").json()

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(GatewayStore, "add_feedback", no_space)
    r = gateway.client.post(
        "/v1/feedback", json={"response_id": answer["id"], "rating": "up"}, headers=gateway.headers("customer")
    )
    assert r.status_code == 507 and "storage is full" in r.json()["error"]["message"]


def test_other_database_errors_stay_internal_errors() -> None:
    assert not storage_full(sqlite3.OperationalError("no such table: conversations"))
    assert to_error_response(sqlite3.OperationalError("no such table: conversations")).status_code == 500
    assert storage_full(RuntimeError("wrapped")) is False
    try:
        try:
            raise sqlite3.OperationalError("database or disk is full")
        except sqlite3.OperationalError as e:
            raise RuntimeError("while logging a turn") from e
    except RuntimeError as wrapped:
        assert storage_full(wrapped)


def test_the_storage_check_writes_a_probe_and_reports_a_full_disk(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = factory.storage_check(tmp_path)
    assert ok["ok"] is True and ok["free_mb"] > 0
    assert list(tmp_path.iterdir()) == []  # the probe is removed

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(factory, "open", no_space, raising=False)
    full = factory.storage_check(tmp_path)
    assert full == {"ok": False, "free_mb": full["free_mb"], "error": "No space left on device"}
