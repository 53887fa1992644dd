"""The registry contract (helpline/platform/registry.py): what the CLI, the gateway and promotion rely on from the
registry, whichever database holds it.

Runs against SQLite in a temporary folder (default tier) and against PostgreSQL (integration: a throwaway server
from Debian's `postgresql`, one empty database per test; skipped where it is not installed).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry import ModelNameTakenError, Registry
from helpline.platform.registry_schema import metadata
from helpline.testing.postgres import PostgresServer


class RegistryContract:
    """What helpline relies on from its registry; subclass and override the ``registry`` fixture."""

    @pytest.fixture
    def registry(self) -> Registry:
        raise NotImplementedError("override the `registry` fixture")

    def test_a_registered_model_is_found_by_name_and_by_alias(self, registry: Registry, tmp_path: Path) -> None:
        registry.register_model("base", kind="base", path=tmp_path / "b", metadata={"chat": True})
        registry.register_model("support-v1", kind="adapter", path=tmp_path / "a", base_model="base")
        registry.register_model("minilm", kind="embedder", path=tmp_path / "e")
        registry.set_alias("production", "support-v1", actor="cli")
        assert registry.get_model("production").name == "support-v1"
        assert registry.base_of("production").metadata == {"chat": True}
        assert [m.name for m in registry.list_models()] == ["base", "support-v1", "minilm"]
        assert [m.name for m in registry.list_models(kind="embedder")] == ["minilm"]
        with pytest.raises(NotFoundError, match="no model or alias named 'nope'"):
            registry.get_model("nope")
        with pytest.raises(ConfigError, match="not a chat model"):
            registry.set_alias("canary", "minilm")

    def test_a_name_in_use_keeps_its_weights_even_with_replace(self, registry: Registry, tmp_path: Path) -> None:
        registry.register_model("m1", kind="base", path=tmp_path / "one")
        registry.register_model("m1", kind="base", path=tmp_path / "two", replace=True)  # nothing refers to it yet
        assert registry.get_model("m1").path == str(tmp_path / "two")
        registry.set_alias("production", "m1")
        with pytest.raises(ModelNameTakenError, match=r"is in use .*alias 'production' points at it") as err:
            registry.register_model("m1", kind="base", path=tmp_path / "three", replace=True)
        assert "m1-2" in err.value.hint and registry.get_model("m1").path == str(tmp_path / "two")
        updated = registry.update_metadata("m1", {"gate": {"passed": True}})
        assert registry.get_model("m1").metadata == updated.metadata == {"gate": {"passed": True}}

    def test_a_rollback_undoes_one_promotion_and_the_next_walks_further_back(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        for name in ("m1", "m2", "m3"):
            registry.register_model(name, kind="base", path=tmp_path / name)
            registry.set_alias("production", name, actor="cli")
        assert registry.rollback_step("production").model_name == "m2"
        change = registry.rollback("production", actor="cli", expect="m2")
        assert (change.model_name, change.previous, change.action) == ("m2", "m3", "rollback")
        registry.rollback("production")
        assert registry.aliases() == {"production": "m1"}
        with pytest.raises(NotFoundError, match="no earlier model"):
            registry.rollback("production")
        history = registry.alias_history("production")
        assert [(h.model_name, h.previous, h.action) for h in history] == [
            ("m1", None, "set"), ("m2", "m1", "set"), ("m3", "m2", "set"),
            ("m2", "m3", "rollback"), ("m1", "m2", "rollback"),
        ]  # fmt: skip

    def test_a_rollback_is_refused_when_the_alias_moved_since_it_was_approved(
        self, registry: Registry, tmp_path: Path
    ) -> None:
        for name in ("m1", "m2"):
            registry.register_model(name, kind="base", path=tmp_path / name)
            registry.set_alias("production", name)
        with pytest.raises(ConfigError, match="changed while it was being rolled back"):
            registry.rollback("production", expect="m9")
        assert registry.aliases() == {"production": "m2"}

    def test_alias_changes_from_many_threads_each_see_the_one_before(self, registry: Registry, tmp_path: Path) -> None:
        names = [f"m{i}" for i in range(8)]
        for name in names:
            registry.register_model(name, kind="base", path=tmp_path / name)
        threads = [threading.Thread(target=registry.set_alias, args=("production", n)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        history = registry.alias_history("production")
        assert sorted(h.model_name for h in history) == names
        # each change read the alias inside its own write: none lost the one before it
        assert [h.previous for h in history] == [None] + [h.model_name for h in history[:-1]]

    def test_knowledge_base_versions_are_numbered_in_order(self, registry: Registry) -> None:
        first = registry.record_kb_version(added=3, updated=0, deleted=0, content_hash="a")
        second = registry.record_kb_version(added=0, updated=1, deleted=1, content_hash="b", note="sync")
        assert second.id > first.id
        assert [(v.id, v.content_hash, v.note) for v in registry.kb_versions()] == [
            (first.id, "a", ""), (second.id, "b", "sync")]  # fmt: skip

    def test_the_migrations_build_exactly_the_tables_the_registry_queries(self, registry: Registry) -> None:
        with registry.engine.connect() as db:
            context = MigrationContext.configure(db, opts={"version_table": "registry_alembic_version"})
            assert compare_metadata(context, metadata) == []
            assert context.get_current_revision() == "0001"
        assert Registry(registry.db_path, url=registry.url).list_models() == []  # reopening changes nothing


class TestSQLiteRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, tmp_path: Path) -> Registry:
        return Registry(tmp_path / "registry.sqlite")


@pytest.mark.integration
class TestPostgresRegistry(RegistryContract):
    @pytest.fixture
    def registry(self, postgres: PostgresServer, tmp_path: Path) -> Registry:
        return Registry(tmp_path / "registry.sqlite", url=postgres.new_database())

    def test_the_rows_live_in_postgresql_not_in_the_workspace_file(self, registry: Registry, tmp_path: Path) -> None:
        registry.register_model("m1", kind="base", path=tmp_path / "m1")
        assert not registry.db_path.exists() and registry.db_path == tmp_path / "registry.sqlite"
        assert registry.location.startswith("postgresql+psycopg://postgres@127.0.0.1:")

    def test_the_registry_and_the_gateway_store_share_one_database(self, postgres: PostgresServer, tmp_path) -> None:
        from helpline.serving.gateway.store import GatewayStore  # the layer above; only this test needs it

        url = postgres.new_database()
        registry = Registry(tmp_path / "registry.sqlite", url=url)
        store = GatewayStore(tmp_path / "gateway.sqlite", url=url)
        registry.register_model("m1", kind="base", path=tmp_path / "m1")
        key, _ = store.create_key("staff", name="ops")
        assert Registry(tmp_path / "other.sqlite", url=url).get_model("m1").name == "m1"
        assert GatewayStore(tmp_path / "other.sqlite", url=url).lookup(key) is not None
        from alembic.script import ScriptDirectory

        from helpline.serving.gateway.store_db import MIGRATIONS

        gateway_head = ScriptDirectory(str(MIGRATIONS)).get_current_head()
        with registry.engine.connect() as db:
            assert MigrationContext.configure(db).get_current_revision() == gateway_head  # in alembic_version
