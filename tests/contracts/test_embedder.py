"""The Embedder contract (helpline/retrieval/embedders/base.py).

What the knowledge base, sync and the evaluators rely on: ``embed_documents`` returns one unit-length
vector per text, in the order given (the int8 backends sort by length to batch, then must restore it),
all of one dimension, even for a text longer than the model's window; ``embed_query`` returns that
dimension; the same text gives the same vector (sync re-embeds only changed chunks); no texts, no
vectors; and a question lies nearer the passage that answers it than an unrelated one.

Runs against ``FakeEmbedder`` and the wrappers the product puts around any embedder (``LazyEmbedder``,
``CachedEmbedder``), default tier; and MiniLM in sentence-transformers, ONNX Runtime int8 and OpenVINO
int8, exported into a temporary folder (integration).
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from helpline.retrieval.embedders.base import CachedEmbedder, Embedder, LazyEmbedder
from helpline.testing import FakeEmbedder

QUESTION = "How do I return an item I bought?"
ANSWER = "To return an item, start a return from your Orders page within 30 days of delivery."
UNRELATED = "Our office plants are watered every Tuesday morning."
#: Far beyond MiniLM's 256-token window: long chunks are truncated, not rejected.
LONG = "Refunds reach your card within 5 working days of the parcel arriving. " * 60


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


class EmbedderContract:
    """What every embedder must do; subclass and override the ``embedder`` fixture."""

    @pytest.fixture
    def embedder(self) -> Embedder:
        raise NotImplementedError("override the `embedder` fixture")

    def test_it_is_an_embedder_with_a_name(self, embedder: Embedder) -> None:
        assert isinstance(embedder, Embedder)
        assert isinstance(embedder.name, str) and embedder.name

    def test_one_unit_vector_per_text_in_order_all_of_one_dimension(self, embedder: Embedder) -> None:
        texts = [UNRELATED, QUESTION, LONG, ANSWER]  # lengths out of order
        vectors = embedder.embed_documents(texts)
        assert len(vectors) == len(texts)
        assert len({len(v) for v in vectors}) == 1 and len(vectors[0]) > 1
        assert all(math.sqrt(sum(x * x for x in v)) == pytest.approx(1.0, abs=1e-3) for v in vectors)
        for i, text in enumerate(texts):  # each text's own vector sits at its own index
            alone = embedder.embed_documents([text])[0]
            nearest = max(range(len(texts)), key=lambda j: cosine(alone, vectors[j]))
            assert nearest == i and cosine(alone, vectors[i]) > 0.98

    def test_a_query_vector_has_the_documents_dimension(self, embedder: Embedder) -> None:
        query = embedder.embed_query(QUESTION)
        assert len(query) == len(embedder.embed_documents([ANSWER])[0])
        assert math.sqrt(sum(x * x for x in query)) == pytest.approx(1.0, abs=1e-3)

    def test_the_same_text_gives_the_same_vector(self, embedder: Embedder) -> None:
        assert embedder.embed_query(QUESTION) == pytest.approx(embedder.embed_query(QUESTION), abs=1e-6)
        first, again = embedder.embed_documents([ANSWER, ANSWER])
        assert first == pytest.approx(again, abs=1e-6)
        assert embedder.embed_documents([ANSWER])[0] == pytest.approx(first, abs=1e-6)

    def test_no_texts_give_no_vectors(self, embedder: Embedder) -> None:
        assert embedder.embed_documents([]) == []

    def test_a_question_is_nearer_the_passage_that_answers_it(self, embedder: Embedder) -> None:
        query = embedder.embed_query(QUESTION)
        answer, unrelated = embedder.embed_documents([ANSWER, UNRELATED])
        assert cosine(query, answer) > cosine(query, unrelated) + 0.2


class TestFakeEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self) -> Embedder:
        return FakeEmbedder()


class TestLazyEmbedder(EmbedderContract):
    @pytest.fixture
    def embedder(self) -> Embedder:
        return LazyEmbedder("lazy-fake", FakeEmbedder)


class TestCachedEmbedder(EmbedderContract):
    """The evaluation cache: vectors come back from SQLite as float32, and must still be the same."""

    @pytest.fixture
    def embedder(self, tmp_path: Path) -> Embedder:
        return CachedEmbedder(FakeEmbedder(), tmp_path / "vectors.sqlite")


@pytest.fixture(scope="module")
def minilm(workspace_dir: Path) -> Path:
    """The folder of the all-MiniLM-L6-v2 that `helpline init` imported."""
    from helpline.platform.registry import Registry

    return Path(Registry(workspace_dir / ".helpline" / "registry.sqlite").get_model("all-minilm-l6-v2").path)


@pytest.mark.integration
class TestSentenceTransformerEmbedder(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self, minilm: Path) -> Embedder:
        from helpline.retrieval.embedders.base import SentenceTransformerEmbedder

        return SentenceTransformerEmbedder(minilm)


@pytest.mark.integration
class TestOnnxInt8Embedder(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self, minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
        from helpline.retrieval.embedders.onnx import OnnxEmbedder, export_int8

        return OnnxEmbedder(export_int8(minilm, tmp_path_factory.mktemp("onnx") / "int8"))  # about 20 s


@pytest.mark.integration
class TestOpenVinoInt8Embedder(EmbedderContract):
    @pytest.fixture(scope="class")
    def embedder(self, minilm: Path, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
        from helpline.retrieval.embedders.openvino import OpenVinoEmbedder, export_openvino_int8
        from helpline.retrieval.factory import calibration_texts

        # 16 calibration chunks instead of the factory's 142: about 10 s instead of 35.
        out = tmp_path_factory.mktemp("openvino") / "int8"
        return OpenVinoEmbedder(export_openvino_int8(minilm, out, texts=calibration_texts()[:16]))
