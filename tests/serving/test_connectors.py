"""Knowledge-base connectors: added by an admin (API or CLI), synced by the gateway that writes the knowledge base
when due, each run's outcome recorded; a failing source is recorded and tried again, never stops serving."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError
from helpline.serving.connectors import check_connector, due, run_due, writes_kb
from helpline.serving.kb_admin import KBAdmin
from helpline.testing.serving import Gateway, make_gateway


def export(folder: Path, *titles: str) -> Path:
    articles = [{"id": i, "title": t, "body": f"<p>{t} explained.</p>", "draft": False, "user_segment_id": None}
                for i, t in enumerate(titles, 1)]  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "page-1.json").write_text(json.dumps({"articles": articles}))
    return folder


@pytest.fixture
def gateway(tmp_path: Path) -> Gateway:
    return make_gateway(tmp_path)


def test_a_connector_is_due_when_never_run_or_its_interval_has_passed() -> None:
    rows = [{"name": "a", "last_at": None, "every_s": 3600.0}, {"name": "b", "last_at": 1000.0, "every_s": 3600.0},
            {"name": "c", "last_at": 500.0, "every_s": 600.0}]  # fmt: skip
    assert [c["name"] for c in due(rows, now=2000.0)] == ["a", "c"]
    assert [c["name"] for c in due(rows, now=5000.0)] == ["a", "c", "b"]


def test_what_is_no_connector_is_refused() -> None:
    with pytest.raises(ConfigError, match="not a slug"):
        check_connector("Zendesk EN", "zendesk:/x", 3600)
    with pytest.raises(ConfigError, match="not a connector source"):
        check_connector("docs", "/srv/articles", 3600)  # a folder: `kb sync FOLDER`, not a connector
    with pytest.raises(ConfigError, match="at most every 5 minutes"):
        check_connector("docs", "https://help.example.com/", 60)


def test_an_admin_adds_a_connector_staff_run_it_and_the_run_is_recorded(gateway: Gateway, tmp_path: Path) -> None:
    source = f"zendesk:{export(tmp_path / 'zd', 'Store credit', 'Gift wrap')}"
    body = {"name": "zendesk-en", "source": source, "every": "6h"}
    assert gateway.client.post("/admin/kb/connectors", json=body, headers=gateway.headers("staff")).status_code == 403
    added = gateway.client.post("/admin/kb/connectors", json=body, headers=gateway.headers("admin"))
    assert added.status_code == 200 and added.json()["every_s"] == 6 * 3600 and added.json()["last_at"] is None
    bad = gateway.client.post("/admin/kb/connectors", json={**body, "every": "1m"}, headers=gateway.headers("admin"))
    assert bad.status_code == 400

    ran = gateway.client.post("/admin/kb/connectors/zendesk-en/sync", headers=gateway.headers("staff"))
    assert ran.status_code == 200 and ran.json()["added"] == ["zendesk-1", "zendesk-2"]
    [listed] = gateway.client.get("/admin/kb/connectors", headers=gateway.headers("staff")).json()["connectors"]
    assert listed["last_status"] == "ok" and listed["last_summary"]["added"] == ["zendesk-1", "zendesk-2"]

    gone = gateway.client.delete("/admin/kb/connectors/zendesk-en", headers=gateway.headers("admin"))
    assert gone.status_code == 200
    again = gateway.client.post("/admin/kb/connectors/zendesk-en/sync", headers=gateway.headers("staff"))
    assert again.status_code == 404
    assert {"zendesk-1", "zendesk-2"} <= {r.doc_id for r in gateway.kb.documents()}  # its documents stay


def test_staff_connect_public_websites_and_leave_exports_and_private_addresses_to_an_admin(
    gateway: Gateway, tmp_path: Path
) -> None:
    def connect(role: str, name: str, source: str) -> tuple[int, str]:
        r = gateway.client.post("/admin/kb/connectors", json={"name": name, "source": source, "every": "1d"},
                                headers=gateway.headers(role))  # fmt: skip
        return r.status_code, json.dumps(r.json())

    assert connect("staff", "public-site", "https://93.184.216.34/help/")[0] == 200  # a global address
    for source, why in [("http://127.0.0.1:8080/", "non-public address (127.0.0.1)"),
                        ("https://10.1.2.3/wiki/", "non-public address (10.1.2.3)"),
                        ("https://[::1]/", "non-public address (::1)"),
                        ("https://help.invalid/", "does not resolve"),
                        (f"zendesk:{export(tmp_path / 'zd', 'Returns')}", "reads the gateway's disk")]:  # fmt: skip
        status, body = connect("staff", "inside", source)
        assert status == 403 and why in body and "an admin key" in body, source
    assert connect("admin", "intranet", "http://10.1.2.3/kb/")[0] == 200  # an admin may point one inside
    # staff may neither repoint nor remove the admin's connector, and may remove their own
    assert connect("staff", "intranet", "https://93.184.216.34/")[0] == 403
    staff = gateway.headers("staff")
    assert gateway.client.delete("/admin/kb/connectors/intranet", headers=staff).status_code == 403
    assert gateway.client.delete("/admin/kb/connectors/public-site", headers=staff).status_code == 200
    listed = gateway.client.get("/admin/kb/connectors", headers=staff).json()["connectors"]
    assert [c["name"] for c in listed] == ["intranet"]


def test_the_gateway_runs_due_connectors_and_records_a_failure_without_raising(
    gateway: Gateway, tmp_path: Path
) -> None:
    store, admin = gateway.store, KBAdmin(gateway.kb)
    store.save_connector("zd", source=f"zendesk:{export(tmp_path / 'zd', 'Returns')}", every_s=3600, actor="t")
    store.save_connector("broken", source="zendesk:/nowhere/at/all.json", every_s=3600, actor="t")
    assert writes_kb(gateway.kb)  # an index no other process opens: this gateway writes it
    assert sorted(run_due(store, admin, crawl_state=tmp_path / "crawl")) == ["broken", "zd"]
    rows = {c["name"]: c for c in store.connectors()}
    assert rows["zd"]["last_status"] == "ok" and rows["zd"]["last_summary"]["added"] == ["zendesk-1"]
    assert rows["broken"]["last_status"] == "failed" and "does not exist" in rows["broken"]["last_summary"]["error"]
    assert run_due(store, admin, crawl_state=tmp_path / "crawl") == []  # neither is due again for an hour


def test_a_serving_gateway_syncs_a_due_connector_on_its_own(gateway: Gateway, tmp_path: Path) -> None:
    import time

    from fastapi.testclient import TestClient

    from helpline.testing.serving import make_replica

    gateway.store.save_connector("zd", source=f"zendesk:{export(tmp_path / 'zd', 'Returns')}", every_s=3600, actor="t")
    serving = make_replica(gateway, connector_check_s=0.1)
    with TestClient(serving.client.app):  # the app's lifespan runs: the connectors loop with it
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and gateway.store.connectors()[0]["last_at"] is None:
            time.sleep(0.05)
    [row] = gateway.store.connectors()
    assert row["last_status"] == "ok" and "zendesk-1" in {r.doc_id for r in gateway.kb.documents()}


def test_kb_sync_source_runs_a_connector_now_and_records_how_it_went(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from helpline.cli import kb as kb_cli
    from helpline.cli.app import app
    from helpline.platform.errors import DataError

    monkeypatch.setenv("HELPLINE_WORKSPACE", str(tmp_path / "ws"))
    source = f"zendesk:{export(tmp_path / 'zendesk', 'Returns', 'Refunds')}"
    synced: list[str] = []

    def sync_source(ctx, ref, **_):  # type: ignore[no-untyped-def]  # the sync itself is tested in tests/retrieval
        synced.append(ref)
        if len(synced) > 1:
            raise DataError("the export went away", hint="export it again")
        return {"added": ["zendesk-1", "zendesk-2"], "updated": [], "deleted": [], "kept": [], "unchanged": 0,
                "chunks_embedded": 2, "version": 2, "failed": []}  # fmt: skip

    monkeypatch.setattr(kb_cli, "sync_source", sync_source)
    runner = CliRunner()
    assert runner.invoke(app, ["kb", "connect", "zendesk-en", source, "--every", "1h"]).exit_code == 0
    done = runner.invoke(app, ["kb", "sync", "--source", "zendesk-en", "--json"])
    assert done.exit_code == 0, done.output
    assert synced == [source] and json.loads(done.output)["added"] == ["zendesk-1", "zendesk-2"]
    [row] = json.loads(runner.invoke(app, ["kb", "connectors", "--json"]).output)
    assert row["last_status"] == "ok" and row["last_summary"]["chunks_embedded"] == 2

    failed = runner.invoke(app, ["kb", "sync", "--source", "zendesk-en"])
    assert isinstance(failed.exception, DataError)  # the CLI's edge prints it with its hint
    [row] = json.loads(runner.invoke(app, ["kb", "connectors", "--json"]).output)
    assert row["last_status"] == "failed" and row["last_summary"]["error"] == "the export went away"

    unknown = runner.invoke(app, ["kb", "sync", "--source", "intercom-fr"])
    assert "no connector 'intercom-fr'" in str(unknown.exception)
    both = runner.invoke(app, ["kb", "sync", str(tmp_path), "--source", "zendesk-en"])
    assert "name one source" in str(both.exception)
    assert len(synced) == 2  # neither of the refused ones synced anything
