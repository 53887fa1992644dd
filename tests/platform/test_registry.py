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
    registry.register_model("detector", kind="detector", path=tmp_path / "d")
    registry.set_alias("production", "adapter-1")
    for name, what in (("minilm", "an embedder"), ("detector", "a hallucination detector")):
        with pytest.raises(ConfigError, match=f"'{name}' is {what}, not a chat model") as err:
            registry.set_alias("production", name)
        assert "base-a" in err.value.hint  # names what can be passed instead
        assert "detector" not in err.value.hint
    assert registry.get_model("production").name == "adapter-1"  # unchanged
    assert len(registry.alias_history("production")) == 1
    assert [m.kind for m in registry.list_models()] == ["base", "adapter", "adapter", "embedder", "detector"]


def test_chat_model_takes_a_name_or_an_alias_and_refuses_what_cannot_answer(registry: Registry, tmp_path: Path) -> None:
    registry.register_model("minilm", kind="embedder", path=tmp_path / "e")
    registry.register_model("helpline-detector", kind="detector", path=tmp_path / "d")
    registry.set_alias("canary", "adapter-2")
    assert registry.chat_model("base-a").kind == "base"
    assert registry.chat_model("canary").name == "adapter-2"
    with pytest.raises(ConfigError, match="'helpline-detector' is a hallucination detector, not a chat model") as err:
        registry.chat_model("helpline-detector")
    assert err.value.hint.startswith("name a base model or adapter (registered: base-a, adapter-1, adapter-2)")
    with pytest.raises(ConfigError, match="'minilm' is an embedder, not a chat model"):
        registry.chat_model("minilm")
    with pytest.raises(NotFoundError, match="no model or alias named 'gpt-5'"):
        registry.chat_model("gpt-5")


def test_base_of_finds_an_adapters_base_and_a_base_is_its_own(registry: Registry) -> None:
    registry.set_alias("production", "adapter-1")
    assert registry.base_of("adapter-1").name == "base-a"
    assert registry.base_of("production").name == "base-a"  # an alias resolves to its adapter first
    assert registry.base_of(registry.get_model("adapter-2")).name == "base-a"
    base = registry.get_model("base-a")
    assert registry.base_of(base) == base and registry.base_of("base-a") == base


def test_base_of_an_adapter_whose_base_is_gone_says_what_to_do(registry: Registry, tmp_path: Path) -> None:
    registry.register_model("orphan", kind="adapter", path=tmp_path / "o", base_model="llama-70b")
    with pytest.raises(NotFoundError, match="'orphan' is for base model 'llama-70b', which is not registered") as err:
        registry.base_of("orphan")
    assert "helpline models import" in err.value.hint
    registry.register_model("nameless", kind="adapter", path=tmp_path / "n")
    with pytest.raises(NotFoundError, match="'nameless' does not name its base model"):
        registry.base_of("nameless")
    registry.register_model("minilm", kind="embedder", path=tmp_path / "e")
    registry.register_model("odd", kind="adapter", path=tmp_path / "x", base_model="minilm")
    with pytest.raises(ConfigError, match="names 'minilm' as its base model, but that is an embedder"):
        registry.base_of("odd")


def test_a_name_in_use_is_never_replaced_and_what_the_alias_serves_stays(registry: Registry, tmp_path: Path) -> None:
    registry.register_model("gated", kind="adapter", path=tmp_path / "g", base_model="base-a")
    registry.update_metadata("gated", {"gate": {"passed": True}})
    registry.set_alias("production", "adapter-1")
    registry.set_alias("production", "adapter-2")  # adapter-1 stays in the history: a rollback returns to it
    for name, why in (("adapter-2", "'production' points at it"), ("adapter-1", "history of 'production'"),
                      ("gated", "gate record")):  # fmt: skip
        for replace in (False, True):
            with pytest.raises(ConfigError, match=f"'{name}' already exists in the registry") as err:
                registry.register_model(name, kind="adapter", path=tmp_path / "evil", base_model="base-a",
                                        replace=replace)  # fmt: skip
            assert why in str(err.value) and "new name" in err.value.hint
        assert registry.get_model(name).path != str(tmp_path / "evil")
    assert registry.get_model("production").path == str(tmp_path / "ad2")


def test_only_a_model_nothing_refers_to_is_replaced_and_only_when_asked(registry: Registry, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'adapter-1' already exists in the registry") as err:
        registry.register_model("adapter-1", kind="adapter", path=tmp_path / "new", base_model="base-a")
    assert "adapter-1-2" in err.value.hint  # a free name to use instead
    assert registry.get_model("adapter-1").metadata == {"rank": 8}
    registry.register_model("adapter-1", kind="adapter", path=tmp_path / "new", base_model="base-a", replace=True)
    assert registry.get_model("adapter-1").path == str(tmp_path / "new")


def test_a_second_rollback_walks_further_back_instead_of_returning_to_the_rolled_back_model(
    registry: Registry,
) -> None:
    for name in ("base-a", "adapter-1", "adapter-2"):
        registry.set_alias("production", name)
    assert registry.rollback("production").model_name == "adapter-1"
    assert registry.rollback("production").model_name == "base-a"  # not adapter-2, just rolled back
    with pytest.raises(NotFoundError, match="no earlier model") as err:
        registry.rollback("production")
    assert "helpline models promote" in err.value.hint
    registry.set_alias("production", "adapter-2")
    assert registry.rollback("production").model_name == "base-a"  # undoes the promotion after the rollbacks
    assert [h.model_name for h in registry.alias_history("production")][-3:] == ["base-a", "adapter-2", "base-a"]
