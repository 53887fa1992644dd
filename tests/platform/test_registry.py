from __future__ import annotations

from pathlib import Path

import pytest

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry import Registry


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry.sqlite")
    reg.register_model("base-a", kind="base", path=tmp_path / "a")
    reg.register_model("adapter-1", kind="adapter", path=tmp_path / "ad1", base_model="base-a", metadata={"rank": 8})
    reg.register_model("adapter-2", kind="adapter", path=tmp_path / "ad2", base_model="base-a")
    return reg


def test_models_persist_across_instances(registry: Registry) -> None:
    again = Registry(registry.db_path)
    record = again.get_model("adapter-1")
    assert record.kind == "adapter"
    assert record.base_model == "base-a"
    assert record.metadata == {"rank": 8}
    assert [m.name for m in again.list_models(kind="adapter")] == ["adapter-1", "adapter-2"]


def test_alias_resolves_and_rolls_back(registry: Registry) -> None:
    registry.set_alias("production", "adapter-1")
    registry.set_alias("production", "adapter-2")
    assert registry.get_model("production").name == "adapter-2"
    change = registry.rollback("production")
    assert change.model_name == "adapter-1"
    assert registry.get_model("production").name == "adapter-1"
    assert [h.model_name for h in registry.alias_history("production")] == ["adapter-1", "adapter-2", "adapter-1"]


def test_unknown_names_give_a_helpful_error(registry: Registry) -> None:
    with pytest.raises(NotFoundError) as err:
        registry.get_model("gpt-5")
    assert "base-a" in str(err.value)  # lists what is known
    with pytest.raises(NotFoundError):
        registry.set_alias("production", "gpt-5")
    with pytest.raises(NotFoundError, match="not set"):
        registry.rollback("canary")


def test_rollback_without_history_is_refused(registry: Registry) -> None:
    registry.set_alias("canary", "adapter-1")
    with pytest.raises(NotFoundError, match="no earlier model"):
        registry.rollback("canary")


def test_kb_versions_are_numbered(registry: Registry) -> None:
    v1 = registry.record_kb_version(added=3, updated=0, deleted=0, content_hash="aa")
    v2 = registry.record_kb_version(added=0, updated=1, deleted=1, content_hash="bb")
    assert (v1.id, v2.id) == (1, 2)
    assert [v.content_hash for v in registry.kb_versions()] == ["aa", "bb"]


def test_an_alias_only_points_at_a_chat_model(registry: Registry, tmp_path: Path) -> None:
    registry.register_model("minilm", kind="embedder", path=tmp_path / "e")
    registry.register_model("detector", kind="base", path=tmp_path / "d", metadata={"role": "detector"})
    registry.set_alias("production", "adapter-1")
    for name, what in (("minilm", "an embedder"), ("detector", "a hallucination detector")):
        with pytest.raises(ConfigError, match=f"'{name}' is {what}, not a chat model") as err:
            registry.set_alias("production", name)
        assert "base-a" in err.value.hint  # names what can be passed instead
        assert "detector" not in err.value.hint
    assert registry.get_model("production").name == "adapter-1"  # unchanged
    assert len(registry.alias_history("production")) == 1
    assert [registry.get_model(n).what for n in ("base-a", "adapter-1", "minilm", "detector")] == [
        "chat", "chat", "embedder", "detector"
    ]  # fmt: skip
