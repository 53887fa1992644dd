"""Help-centre exports (Zendesk Guide, Intercom) synced into the knowledge base: only changed articles are embedded
again, a deleted one is dropped, restricted ones are staff-only, drafts stay out. The exports are written here, in
each API's JSON shape, with made-up articles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpline.platform.errors import DataError
from helpline.platform.schemas import Document
from helpline.retrieval.ingest.exports import load_export, parse_source, source_origin
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.testing import FakeEmbedder, InMemoryStore

TOPICS = ["returns", "refunds", "vouchers", "deliveries", "invoices", "passwords", "warranty", "exchanges", "fees",
          "subscriptions"]  # fmt: skip


def open_kb(tmp_path: Path) -> KnowledgeBase:
    return KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), chunk_size=200, chunk_overlap=20,
                         records=RecordManager(tmp_path / "records.sqlite"), index_dir=tmp_path / "bm25")  # fmt: skip


def zendesk_article(i: int, *, body: str | None = None, **extra) -> dict:
    topic = TOPICS[i % len(TOPICS)]
    return {"id": 1000 + i, "title": f"About {topic} ({i})",
            "html_url": f"https://help.example.com/articles/{1000 + i}",
            "body": body or f"<h1>About {topic}</h1><p>Article {i} explains {topic} in {i} simple steps.</p>",
            "draft": False, "user_segment_id": None, "locale": "en-us", "section_id": 7, "label_names": [topic],
            "updated_at": "2026-11-01T10:00:00Z", **extra}  # fmt: skip


def write_pages(folder: Path, articles: list[dict], per_page: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.json"):
        old.unlink()
    for n in range(0, len(articles), per_page):
        page = {"articles": articles[n : n + per_page], "page": n // per_page + 1, "next_page": None}
        (folder / f"page-{n // per_page + 1:03d}.json").write_text(json.dumps(page))
    return folder


def test_a_second_sync_of_a_zendesk_export_embeds_only_the_changed_articles_and_drops_the_deleted(
    tmp_path: Path,
) -> None:
    articles = [zendesk_article(i) for i in range(55)]
    export = write_pages(tmp_path / "zendesk", articles)
    kb = open_kb(tmp_path)
    origin = source_origin("zendesk", export)
    first = kb.sync_source(origin, load_export("zendesk", export))
    assert len(first.added) == 55 and first.chunks_embedded >= 55

    for i in (3, 17, 40):  # three edited articles
        articles[i] = zendesk_article(i, body=f"<p>Article {i} was rewritten: {TOPICS[i % 10]} changed in 2026.</p>")
    del articles[50]  # one deleted
    write_pages(export, articles)
    second = kb.sync_source(origin, load_export("zendesk", export))
    assert sorted(second.updated) == ["zendesk-1003", "zendesk-1017", "zendesk-1040"]
    assert second.deleted == ["zendesk-1050"] and second.unchanged == 51 and not second.added
    assert second.chunks_embedded == 3  # one short chunk per edited article, nothing else embedded again
    assert "zendesk-1050" not in kb.records.all()


def test_restricted_articles_are_staff_only_drafts_stay_out_and_other_sources_are_kept(tmp_path: Path) -> None:
    export = write_pages(tmp_path / "zendesk", [
        zendesk_article(1), zendesk_article(2, user_segment_id=360001), zendesk_article(3, draft=True),
    ])  # fmt: skip
    docs = {d.doc_id: d for d in load_export("zendesk", export)}
    assert set(docs) == {"zendesk-1001", "zendesk-1002"}
    assert (docs["zendesk-1001"].access, docs["zendesk-1002"].access) == ("public", "internal")
    assert docs["zendesk-1001"].source == "https://help.example.com/articles/1001"
    assert "Article 1 explains refunds" in docs["zendesk-1001"].text and "<p>" not in docs["zendesk-1001"].text

    kb = open_kb(tmp_path)
    kb.sync([Document(doc_id="manual", title="Fees", text="A hand-written article about fees.")], origin="upload")
    kb.sync_source(source_origin("zendesk", export), list(docs.values()))
    assert "manual" in kb.records.all()  # another source's document stays
    with pytest.raises(DataError, match="holds no published article"):
        kb.sync_source(source_origin("zendesk", export), [])  # an empty export deletes nothing


def test_intercom_articles_and_what_is_not_an_export_are_told_apart(tmp_path: Path) -> None:
    page = {"type": "list", "data": [
        {"id": 7, "type": "article", "title": "Reset your password", "url": "https://intercom.help/x/7",
         "body": "<p>Use the reset link on the sign-in page.</p>", "state": "published", "parent_id": 3},
        {"id": 8, "type": "article", "title": "Draft", "body": "<p>Not yet.</p>", "state": "draft"},
    ]}  # fmt: skip
    (tmp_path / "intercom.json").write_text(json.dumps(page))
    kind, path = parse_source(f"intercom:{tmp_path / 'intercom.json'}")
    [article] = load_export(kind, path)
    assert (article.doc_id, article.access) == ("intercom-7", "public")
    assert article.text == "Use the reset link on the sign-in page."

    with pytest.raises(DataError, match="not KIND:PATH"):
        parse_source(f"freshdesk:{tmp_path}")
    (tmp_path / "bad.json").write_text(json.dumps({"articles": [{"title": "no id or body"}]}))
    with pytest.raises(DataError, match=r"bad\.json article 1: not a zendesk article"):
        load_export("zendesk", tmp_path / "bad.json")
    (tmp_path / "page.json").write_text(json.dumps({"results": []}))
    with pytest.raises(DataError, match="is not an export page"):
        load_export("zendesk", tmp_path / "page.json")
