"""Chroma store behaviour outside the store contract (the contract itself: tests/contracts/test_vector_store.py)."""

from __future__ import annotations

import pytest

from helpline.retrieval.stores.chroma import ChromaStore


def test_unreachable_server_error_says_how_to_start_one() -> None:
    from helpline.platform.errors import ConfigError
    from helpline.retrieval.stores.chroma_server import free_port

    with pytest.raises(ConfigError) as info:
        ChromaStore.server("127.0.0.1", free_port(), "x")
    assert "chroma run" in (info.value.hint or "")
