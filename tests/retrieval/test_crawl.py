"""A help centre crawled from a local fixture site (55 pages written here): the second crawl downloads only the
pages that changed (ETag / Last-Modified answered 304), the knowledge base embeds only those again and drops the
page that is gone; robots.txt, the site's bounds and the limits hold; an outage of the site deletes nothing."""

from __future__ import annotations

import hashlib

import pytest

from helpline.platform.errors import DataError
from helpline.retrieval.ingest.crawl import crawl_origin, crawl_site
from helpline.retrieval.ingest.records import RecordManager
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.testing import FakeEmbedder, InMemoryStore

pytest.importorskip("uvicorn")
fastapi = pytest.importorskip("fastapi")
TOPICS = ["returns", "refunds", "vouchers", "deliveries", "invoices", "passwords", "warranty", "exchanges", "fees",
          "subscriptions", "accounts"]  # fmt: skip


def page(i: int, extra: str = "") -> str:
    topic = TOPICS[i % len(TOPICS)]
    return (f"<html><head><title>{topic.title()} {i}</title></head><body><h1>{topic.title()} {i}</h1>"
            f"<p>Article {i}: how {topic} work, in {i} steps.{extra}</p>"
            f"<a href='/articles/{(i + 1) % 54}'>next</a></body></html>")  # fmt: skip


class Site:
    """The fixture site: ``pages`` by path; answers 304 to a matching If-None-Match; ``down`` answers 503."""

    def __init__(self) -> None:
        Response = fastapi.Response
        self.pages = {f"/articles/{i}": page(i) for i in range(54)}
        links = "".join(f"<li><a href='/articles/{i}'>{i}</a></li>" for i in range(54))
        self.pages["/"] = (f"<html><body><h1>Help centre</h1><ul>{links}</ul><a href='/private/staff'>staff</a>"
                           "<a href='https://elsewhere.example.com/x'>out</a></body></html>")  # fmt: skip
        self.pages["/private/staff"] = "<html><body><p>Staff only, and robots may not read it.</p></body></html>"
        self.full, self.down = [], False
        app = fastapi.FastAPI()

        @app.get("/robots.txt")
        def robots() -> fastapi.Response:
            return Response("User-agent: *\nDisallow: /private/\n", media_type="text/plain")

        @app.get("/{path:path}")
        def serve(path: str, request: fastapi.Request) -> fastapi.Response:
            html = self.pages.get("/" + path)
            if self.down:
                return Response(status_code=503)
            if html is None:
                return Response(status_code=404)
            etag = '"' + hashlib.sha256(html.encode()).hexdigest()[:16] + '"'
            if request.headers.get("if-none-match") == etag:
                return Response(status_code=304, headers={"ETag": etag})
            self.full.append("/" + path)
            return Response(html, media_type="text/html", headers={"ETag": etag})

        self.app = app


@pytest.fixture
def site():
    from helpline.testing.serving import serve_in_thread

    fixture = Site()
    with serve_in_thread(fixture.app) as port:
        yield fixture, f"http://127.0.0.1:{port}/"


def test_a_second_crawl_downloads_and_embeds_only_the_changed_pages_and_drops_the_one_gone(site, tmp_path) -> None:
    fixture, start = site
    state = tmp_path / "crawl.json"
    kb = KnowledgeBase(store=InMemoryStore(), embedder=FakeEmbedder(), chunk_size=300, chunk_overlap=20,
                       records=RecordManager(tmp_path / "records.sqlite"))  # fmt: skip
    docs, crawled = crawl_site(start, state_path=state)
    assert len(docs) == 55 and crawled.fetched == 55  # the index and 54 articles
    assert crawled.skipped == {"robots.txt": 1}  # /private/ is disallowed; the other site is never queued
    first = kb.sync_source(crawl_origin(start), docs)
    assert len(first.added) == 55

    fixture.full.clear()
    for i in (3, 17, 40):
        fixture.pages[f"/articles/{i}"] = page(i, " Updated in December.")
    del fixture.pages["/articles/50"]
    docs, crawled = crawl_site(start, state_path=state)
    assert sorted(fixture.full) == ["/articles/17", "/articles/3", "/articles/40"]  # the rest answered 304
    assert (crawled.fetched, crawled.not_modified, crawled.skipped) == (3, 51, {"robots.txt": 1, "HTTP 404": 1})
    second = kb.sync_source(crawl_origin(start), docs)
    assert len(second.updated) == 3 and len(second.deleted) == 1 and second.unchanged == 51
    assert second.chunks_embedded == 3
    assert "Updated in December" in next(d.text for d in docs if d.source.endswith("/articles/17"))

    fixture.down = True  # an outage: what the pages said is kept, nothing is deleted
    docs, crawled = crawl_site(start, state_path=state)
    assert len(docs) == 54 and crawled.skipped["unreachable, kept as last crawled"] == 54
    assert kb.sync_source(crawl_origin(start), docs).deleted == []


def test_a_sitemap_index_is_read_through_to_its_pages(site, tmp_path) -> None:
    fixture, start = site
    fixture.pages["/sitemap.xml"] = (f"<sitemapindex><sitemap><loc>{start}sitemap-1.xml</loc></sitemap>"
                                     "</sitemapindex>")  # fmt: skip
    urls = "".join(f"<url><loc>{start}articles/{i}</loc></url>" for i in range(3))
    other = "<url><loc>https://elsewhere.example.com/a</loc></url>"
    fixture.pages["/sitemap-1.xml"] = f"<urlset>{urls}{other}</urlset>"
    docs, _ = crawl_site(f"{start}sitemap.xml", state_path=tmp_path / "s.json", max_depth=0)
    assert sorted(d.source.rsplit("/", 1)[1] for d in docs) == ["0", "1", "2"]  # listed pages only, own site only


def test_the_crawl_stops_at_its_limits_and_refuses_what_is_no_address(site, tmp_path) -> None:
    _, start = site
    docs, crawled = crawl_site(start, state_path=tmp_path / "s.json", max_pages=10)
    assert len(docs) == 10 and "over max_pages (10)" in crawled.skipped
    docs, _ = crawl_site(start, state_path=tmp_path / "d.json", max_depth=0)
    assert len(docs) == 1  # the start page only
    with pytest.raises(DataError, match="not a web address"):
        crawl_site("help.example.com", state_path=tmp_path / "x.json")
