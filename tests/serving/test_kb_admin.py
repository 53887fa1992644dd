"""Knowledge-base admin through the gateway: folder sync, uploads and their access level, hostile files."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from helpline.platform.schemas import Document
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.serving import kb_admin
from helpline.serving.kb_admin import KBAdmin
from helpline.serving.kb_owner import OwnedKB
from helpline.testing import FakeEmbedder, InMemoryStore
from helpline.testing.documents import text_pdf
from helpline.testing.serving import Gateway


def _folder(tmp_path: Path, **articles: str) -> Path:
    folder = tmp_path / "articles"
    folder.mkdir(exist_ok=True)
    for name, text in articles.items():
        (folder / f"{name}.md").write_text(text)
    return folder


def _doc_ids(gw: Gateway) -> set[str]:
    listed = gw.client.get("/admin/kb/documents", headers=gw.headers("staff")).json()["documents"]
    return {d["doc_id"] for d in listed}


def test_admin_folder_sync_indexes_the_folder_and_is_audited(gateway: Gateway, tmp_path: Path) -> None:
    folder = _folder(tmp_path, vouchers="---\naccess: public\n---\n# Vouchers\nVouchers last one year.\n")
    (folder / "broken.md").write_bytes(b"\x00\x01 binary")
    resp = gateway.client.post("/admin/kb/sync", json={"folder": str(folder)}, headers=gateway.headers("admin"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["added"] == ["vouchers"] and [f["path"] for f in body["failed"]] == [str(folder / "broken.md")]
    cited = gateway.chat("customer", "how long do vouchers last?").json()["citations"]
    assert cited[0]["doc_id"] == "vouchers"
    assert ("kb.sync", str(folder)) in [(a["action"], a["target"]) for a in gateway.store.audit_log()]


def test_admin_folder_sync_needs_the_admin_role_and_an_existing_folder(gateway: Gateway, tmp_path: Path) -> None:
    folder = _folder(tmp_path, vouchers="# Vouchers\nVouchers last one year.\n")
    staff = gateway.client.post("/admin/kb/sync", json={"folder": str(folder)}, headers=gateway.headers("staff"))
    assert staff.status_code == 403
    missing = {"folder": str(tmp_path / "nowhere")}
    assert gateway.client.post("/admin/kb/sync", json=missing, headers=gateway.headers("admin")).status_code == 404


def test_an_admin_syncs_a_help_centre_export_through_the_gateway(gateway: Gateway, tmp_path: Path) -> None:
    import json

    article = {"id": 5, "title": "Store credit", "body": "<p>Store credit never expires.</p>", "draft": False,
               "user_segment_id": None, "html_url": "https://help.example.com/5"}  # fmt: skip
    page = {"articles": [article]}
    (tmp_path / "zendesk.json").write_text(json.dumps(page))
    ref = f"zendesk:{tmp_path / 'zendesk.json'}"
    resp = gateway.client.post("/admin/kb/sync", json={"folder": ref}, headers=gateway.headers("admin"))
    assert resp.status_code == 200 and resp.json()["added"] == ["zendesk-5"]
    assert "zendesk-5" in _doc_ids(gateway)
    missing = {"folder": "zendesk:/nowhere.json"}
    bad = gateway.client.post("/admin/kb/sync", json=missing, headers=gateway.headers("admin"))
    assert bad.status_code == 422 and "does not exist" in bad.json()["error"]["message"]


def test_every_method_kb_admin_calls_exists_on_the_gateways_owned_kb() -> None:
    """The gateway hands KBAdmin an OwnedKB, not a bare KnowledgeBase: each ``self.kb.X`` must exist there."""
    tree = ast.parse(inspect.getsource(kb_admin))
    called = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Attribute)
        and node.value.attr == "kb"
        and isinstance(node.value.value, ast.Name)
        and node.value.value.id == "self"
    }
    assert "sync_folder" in called
    assert sorted(name for name in called if not hasattr(OwnedKB, name)) == []


def test_kb_admin_over_an_owned_kb_lists_upserts_syncs_and_deletes(tmp_path: Path) -> None:
    owned = OwnedKB(lambda: KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), chunk_size=300))
    admin = KBAdmin(owned)
    upload = Document(doc_id="gift", title="Gift cards", text="Gift cards never expire.", access="internal")
    assert admin.upsert([upload])["added"] == ["gift"]
    folder = _folder(tmp_path, fees="# Fees\nNo fee for standard delivery.\n")
    assert admin.sync_folder(str(folder))["added"] == ["fees"]
    listed = {d["doc_id"]: d for d in admin.list_documents()}
    assert listed["gift"]["origin"] == "upload" and listed["fees"]["origin"] == f"folder:{folder.resolve()}"
    assert admin.delete("gift")["deleted"] == ["gift"]
    assert [d["doc_id"] for d in admin.list_documents()] == ["fees"]
    owned.close()


# uploads state their access level; a folder sync leaves them alone ------------------------------


def test_a_json_upload_without_an_access_level_is_refused(gateway: Gateway) -> None:
    doc = {"doc_id": "waiver", "title": "Fee waiver", "text": "Staff may waive the restocking fee."}
    resp = gateway.client.post("/admin/kb/documents", json={"documents": [doc]}, headers=gateway.headers("staff"))
    assert resp.status_code == 400 and "access" in resp.json()["error"]["message"]
    assert "waiver" not in _doc_ids(gateway)
    doc["access"] = "internal"
    resp = gateway.client.post("/admin/kb/documents", json={"documents": [doc]}, headers=gateway.headers("staff"))
    assert resp.status_code == 200 and resp.json()["added"] == ["waiver"]
    hits = gateway.kb.search("waive the restocking fee", k=3, role="customer", mode="dense")
    assert "waiver" not in [h.chunk.doc_id for h in hits]


def test_a_pdf_upload_must_say_who_may_see_it(gateway: Gateway) -> None:
    staff = gateway.headers("staff")
    pdf = text_pdf("Fraud review checklist for staff")
    resp = gateway.client.post("/console/kb/files?filename=fraud.pdf", content=pdf, headers=staff)
    assert resp.status_code == 422 and "who may see it" in resp.json()["error"]["message"]
    assert "fraud" not in _doc_ids(gateway)
    resp = gateway.client.post("/console/kb/files?filename=fraud.pdf&access=internal", content=pdf, headers=staff)
    assert resp.status_code == 200 and resp.json()["access"] == "internal"
    hits = gateway.kb.search("fraud review checklist", k=3, role="customer", mode="dense")
    assert "fraud" not in [h.chunk.doc_id for h in hits]


def test_a_folder_sync_keeps_uploaded_documents_and_deletes_only_its_own(gateway: Gateway, tmp_path: Path) -> None:
    staff, admin = gateway.headers("staff"), gateway.headers("admin")
    upload = {"doc_id": "gift-cards", "title": "Gift cards", "text": "Gift cards never expire.", "access": "public"}
    assert gateway.client.post("/admin/kb/documents", json={"documents": [upload]}, headers=staff).status_code == 200
    folder = _folder(tmp_path, fees="# Fees\nNo fee for standard delivery.\n", vouchers="# Vouchers\nOne year.\n")
    assert gateway.client.post("/admin/kb/sync", json={"folder": str(folder)}, headers=admin).status_code == 200
    (folder / "vouchers.md").unlink()
    resp = gateway.client.post("/admin/kb/sync", json={"folder": str(folder)}, headers=admin)
    assert resp.json()["deleted"] == ["vouchers"]
    assert _doc_ids(gateway) == {"returns", "shipping", "goodwill", "gift-cards", "fees"}


# hostile files are a 4xx with the reason, never a 500 -----------------------------------------


def test_hostile_uploads_are_refused_with_the_reason(gateway: Gateway) -> None:
    staff = gateway.headers("staff")
    huge_field = b'question,answer\n"Long?","' + b"x" * (200 * 1024) + b'"\n'
    resp = gateway.client.post("/console/kb/files?filename=faq.csv&access=public", content=huge_field, headers=staff)
    assert resp.status_code == 422 and "longer than" in resp.json()["error"]["message"]
    odd_key = b"---\n~: nothing\naccess: public\n---\n# Odd\nBody text.\n"
    resp = gateway.client.post("/console/kb/files?filename=odd.md", content=odd_key, headers=staff)
    assert resp.status_code == 422 and "front matter" in resp.json()["error"]["message"]
