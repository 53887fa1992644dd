"""The thin path from a folder of articles to a cited answer, with fakes (fast tier)."""

from __future__ import annotations

from pathlib import Path

from helpline.answering.rag import RAGPipeline
from helpline.platform.registry import Registry
from helpline.platform.schemas import ChatMessage
from helpline.retrieval.ingest.loaders import load_directory
from helpline.retrieval.knowledge_base import KnowledgeBase
from helpline.testing import FakeEmbedder, FakeGenerator, InMemoryStore

ARTICLES = {
    "returns.md": "---\ntitle: Returning an item\n---\n# Returning an item\n\n## Steps\n\n"
    "1. Open your orders and choose Return.\n2. Print the label and drop the parcel off within 30 days.\n",
    "shipping.md": "---\ntitle: Shipping fees\n---\n# Shipping fees\n\nStandard shipping costs 4.95 and takes "
    "3 to 5 business days. Express delivery costs 12.90.\n",
    "staff.md": "---\ntitle: Goodwill credit\naccess: internal\n---\n# Goodwill credit\n\nStaff may grant a "
    "goodwill credit of up to 20 euros for a late parcel.\n",
}


def _kb(tmp_path: Path) -> tuple[KnowledgeBase, Path, Registry]:
    folder = tmp_path / "kb"
    folder.mkdir()
    for name, text in ARTICLES.items():
        (folder / name).write_text(text)
    registry = Registry(tmp_path / "reg.sqlite")
    kb = KnowledgeBase(
        store=InMemoryStore(), embedder=FakeEmbedder(), registry=registry, chunk_size=300, chunk_overlap=20
    )
    docs, failures = load_directory(folder)
    assert failures == []
    kb.sync(docs)
    return kb, folder, registry


def test_answer_cites_the_article_that_answers(tmp_path: Path) -> None:
    kb, _, _ = _kb(tmp_path)
    generator = FakeGenerator(reply="Print the label and drop the parcel off.")
    answer = RAGPipeline(search=kb.search, generator=generator, top_k=2).answer(
        [ChatMessage(role="user", content="How do I return an item, which label do I print?")]
    )
    assert answer.citations[0].doc_id == "returns"
    assert answer.answer == "Print the label and drop the parcel off."
    system = generator.requests[0][0]
    assert system.role == "system" and "drop the parcel off within 30 days" in system.content
    assert "<passage" in system.content  # passages are fenced as data


def test_customers_never_see_internal_articles(tmp_path: Path) -> None:
    kb, _, _ = _kb(tmp_path)
    question = "goodwill credit for a late parcel"
    assert all(h.chunk.access == "public" for h in kb.search(question, k=5, role="customer"))
    assert kb.search(question, k=1, role="staff")[0].chunk.doc_id == "staff"


def test_abstains_without_relevant_passages(tmp_path: Path) -> None:
    kb, _, _ = _kb(tmp_path)
    generator = FakeGenerator()
    answer = RAGPipeline(search=kb.search, generator=generator, min_score=0.9).answer(
        [ChatMessage(role="user", content="Do you sell concert tickets?")]
    )
    assert answer.abstained and answer.citations == []
    assert "person" in answer.answer
    assert generator.requests == []  # the model is not asked to make something up


def test_resync_embeds_only_what_changed(tmp_path: Path) -> None:
    kb, folder, registry = _kb(tmp_path)
    embedder = kb.embedder
    assert isinstance(embedder, FakeEmbedder)
    embedder.calls.clear()
    docs, _ = load_directory(folder)
    report = kb.sync(docs)
    assert (report.added, report.updated, report.deleted, report.unchanged) == ([], [], [], 3)
    assert embedder.calls == []

    (folder / "shipping.md").write_text(ARTICLES["shipping.md"].replace("4.95", "5.95"))
    (folder / "staff.md").unlink()
    docs, _ = load_directory(folder)
    report = kb.sync(docs)
    assert (report.updated, report.deleted) == (["shipping"], ["staff"])
    assert "5.95" in kb.search("standard shipping cost", k=1, role="staff")[0].chunk.text
    assert [v.deleted for v in registry.kb_versions()] == [0, 1]
