"""The store contract, run against every backend: in-memory and embedded Chroma here, a Chroma server in
the integration tier."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from helpline.retrieval.stores.chroma import ChromaStore
from helpline.testing import InMemoryStore
from helpline.testing.retrieval import VectorStoreContract


class TestInMemoryStore(VectorStoreContract):
    @pytest.fixture
    def store(self) -> InMemoryStore:
        return InMemoryStore()


@pytest.fixture(scope="module")
def chroma_client(tmp_path_factory: pytest.TempPathFactory) -> object:
    """One PersistentClient per module (opening one takes seconds); each test gets its own collection."""
    return ChromaStore.embedded(tmp_path_factory.mktemp("chroma"), "warmup")._client


class TestEmbeddedChroma(VectorStoreContract):
    @pytest.fixture
    def store(self, chroma_client: object) -> ChromaStore:
        return ChromaStore(chroma_client, f"contract-{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def chroma_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    from helpline.retrieval.stores.chroma_server import ChromaServer, free_port

    root = tmp_path_factory.mktemp("chroma-server")
    with ChromaServer(root / "data", port=free_port(), log=root / "server.log") as server:
        yield server.host, server.port


@pytest.mark.integration
class TestChromaServer(VectorStoreContract):
    @pytest.fixture
    def store(self, chroma_server: tuple[str, int]) -> ChromaStore:
        host, port = chroma_server
        return ChromaStore.server(host, port, f"contract-{uuid.uuid4().hex[:8]}")


def test_unreachable_server_error_says_how_to_start_one() -> None:
    from helpline.platform.errors import ConfigError
    from helpline.retrieval.stores.chroma_server import free_port

    with pytest.raises(ConfigError) as info:
        ChromaStore.server("127.0.0.1", free_port(), "x")
    assert "chroma run" in (info.value.hint or "")
