"""A website or help centre as knowledge-base documents: crawled from a start page or read from its sitemap.

The crawl stays on the start page's site (scheme and host), obeys its robots.txt (for the ``helpline`` user agent,
its Crawl-delay too, up to 30 s), and stops at ``max_depth`` links from the start and ``max_pages`` pages. Pages are
fetched with the validators the last crawl saw (``If-None-Match`` with the ETag, ``If-Modified-Since`` with Last-
Modified): a page that answers 304 is not downloaded again and keeps the text the last crawl extracted (kept in a
state file beside the index). A page that is gone (404, 410, or no longer linked) is not in the result, so
``KnowledgeBase.sync_source`` drops it; only new and changed pages are embedded. A page that does not answer (a
connection error, a 5xx) keeps what the last crawl saw: an outage of the site does not empty the knowledge base.

A page's access level is its ``<meta name="access">`` (``internal`` for staff-only pages), public otherwise.
"""

from __future__ import annotations

import hashlib
import json
import time
import urllib.robotparser
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlparse

import httpx

from helpline.platform.errors import DataError
from helpline.platform.lazy_imports import require
from helpline.platform.schemas import Document
from helpline.retrieval.ingest import formats

USER_AGENT = "helpline"
HTML_TYPES = ("text/html", "application/xhtml+xml")


@dataclass
class CrawlReport:
    """What a crawl fetched: pages downloaded, answered 304 (unchanged, not downloaded), skipped and why."""

    fetched: int = 0
    not_modified: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1


def crawl_origin(start: str) -> str:
    return f"web:{start}"


def crawl_site(
    start: str, *, state_path: Path, max_pages: int = 500, max_depth: int = 5, timeout_s: float = 20.0,
    client: httpx.Client | None = None,
) -> tuple[list[Document], CrawlReport]:  # fmt: skip
    """Crawl ``start`` (a page, or a sitemap.xml) and return its pages as documents, with what was fetched."""
    if urlparse(start).scheme not in ("http", "https"):
        raise DataError(f"{start!r} is not a web address", hint="e.g. https://help.example.com/ or .../sitemap.xml")
    state = _load_state(state_path)
    seen_state: dict[str, dict] = {}
    report = CrawlReport()
    own = client is None
    client = client or httpx.Client(timeout=timeout_s, follow_redirects=True, headers={"User-Agent": USER_AGENT})
    try:
        robots = _robots(client, start)
        docs: dict[str, Document] = {}
        queue: deque[tuple[str, int]] = deque(_seeds(client, start))
        queued = {url for url, _ in queue}
        delay = float(robots.crawl_delay(USER_AGENT) or 0)  # the site's Crawl-delay, between requests
        while queue and len(docs) < max_pages:
            url, depth = queue.popleft()
            if not robots.can_fetch(USER_AGENT, url):
                report.skip("robots.txt")
                continue
            if delay and (report.fetched or report.not_modified):
                time.sleep(min(delay, 30.0))
            page = _fetch(client, url, state.get(url), report)
            if page is None:
                continue
            seen_state[url] = page
            parsed = _document(url, page["html"])
            if parsed is not None:
                docs[parsed.doc_id] = parsed
            if depth >= max_depth:
                continue
            for link in _links(url, page["html"], start):
                if link not in queued:
                    queued.add(link)
                    queue.append((link, depth + 1))
        if queue:
            report.skip(f"over max_pages ({max_pages})")
    finally:
        if own:
            client.close()
    _save_state(state_path, seen_state)
    return list(docs.values()), report


def _seeds(client: httpx.Client, start: str, *, nested: int = 1) -> list[tuple[str, int]]:
    """The start page, or every page a sitemap lists (each then at depth 0); a sitemap index's sitemaps are read
    too (one level down, as sitemaps.org allows)."""
    if not start.endswith(".xml"):
        return [(urldefrag(start)[0], 0)]
    resp = client.get(start)
    if resp.status_code != 200:
        raise DataError(f"{start} answered {resp.status_code}", hint="check the sitemap's address")
    bs4 = require("bs4", "retrieval")
    soup = bs4.BeautifulSoup(resp.text, "html.parser")
    urls = [loc.get_text(strip=True) for loc in soup.find_all("loc")]
    seeds: list[tuple[str, int]] = []
    for url in (u for u in urls if _same_site(u, start)):
        if url.endswith(".xml") and soup.find("sitemapindex") is not None and nested > 0:
            seeds += _seeds(client, url, nested=nested - 1)
        else:
            seeds.append((url, 0))
    return seeds


def _robots(client: httpx.Client, start: str) -> urllib.robotparser.RobotFileParser:
    parts = urlparse(start)
    robots = urllib.robotparser.RobotFileParser()
    try:
        resp = client.get(f"{parts.scheme}://{parts.netloc}/robots.txt")
        robots.parse(resp.text.splitlines() if resp.status_code == 200 else [])
    except httpx.HTTPError:
        robots.parse([])  # none to read: everything may be fetched
    return robots


def _fetch(client: httpx.Client, url: str, known: dict | None, report: CrawlReport) -> dict | None:
    """The page (html, etag, last_modified), from the last crawl when it answers 304; None when it is gone or is
    not an HTML page."""
    headers = {}
    if known and known.get("etag"):
        headers["If-None-Match"] = known["etag"]
    if known and known.get("last_modified"):
        headers["If-Modified-Since"] = known["last_modified"]
    try:
        resp = client.get(url, headers=headers)
    except httpx.HTTPError:
        resp = None
    if resp is None or resp.status_code >= 500:  # a passing outage must not delete what the page said
        report.skip("unreachable, kept as last crawled" if known else "unreachable")
        return known
    if resp.status_code == 304 and known:
        report.not_modified += 1
        return known
    if resp.status_code != 200:
        report.skip(f"HTTP {resp.status_code}")
        return None
    if not resp.headers.get("content-type", "").startswith(HTML_TYPES):
        report.skip("not HTML")
        return None
    report.fetched += 1
    return {"html": resp.text, "etag": resp.headers.get("etag"), "last_modified": resp.headers.get("last-modified")}


def _document(url: str, html: str) -> Document | None:
    title, text, meta = formats.parse_html(html)
    if not text.strip():
        return None
    access = "internal" if str(meta.get("access", "")).lower() == "internal" else "public"
    path = urlparse(url).path.strip("/") or "index"
    doc_id = "web-" + hashlib.sha256(url.encode()).hexdigest()[:12]
    return Document(doc_id=doc_id, title=title or path, text=text, source=url, access=access,  # type: ignore[arg-type]
                    metadata={"url": url})  # fmt: skip


def _links(url: str, html: str, start: str) -> list[str]:
    bs4 = require("bs4", "retrieval")
    out = []
    for a in bs4.BeautifulSoup(html, "html.parser").find_all("a", href=True):
        link = urldefrag(urljoin(url, str(a["href"])))[0]
        if _same_site(link, start) and urlparse(link).scheme in ("http", "https"):
            out.append(link)
    return out


def _same_site(url: str, start: str) -> bool:
    a, b = urlparse(url), urlparse(start)
    return (a.scheme, a.netloc) == (b.scheme, b.netloc)


def _load_state(path: Path) -> dict[str, dict]:
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


def _save_state(path: Path, state: dict[str, dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(state))
    partial.replace(path)
