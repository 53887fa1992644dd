"""The registry: base models, adapters, embedders, hallucination detectors, knowledge-base versions
and aliases: in the workspace's SQLite file ``registry.sqlite`` by default, in the PostgreSQL database named by
``database_url`` when it is set (beside the gateway's tables).

Aliases (``production``, ``canary``, ...) point at a registered chat model; every change is kept in
``alias_history`` so that a rollback is one call. A rollback is marked as one there, so the next rollback
walks further back instead of undoing it.

A model's name is its identity: aliases, their history (where a rollback returns) and the gate's verdict
all refer to it by name. A registered name is therefore never silently given other weights: see
:meth:`Registry.register_model`.

Opening a registry brings its schema up to date with Alembic (``registry_alembic/``, revisions kept in
``registry_alembic_version``). A SQLite file from before Alembic carries its schema version in ``PRAGMA
user_version``; the first revision runs its missing steps (``registry_migrations``) in place, in one transaction,
so a second open changes nothing.

Changes that read before they write (registering a name, pointing an alias, a rollback) run in one transaction that
other writers wait for: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's transaction-scoped advisory lock.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, insert, select, update

from helpline.platform import database
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.registry_migrations import legacy_version
from helpline.platform.registry_records import (
    CHAT_KINDS,
    AliasChange,
    KBVersion,
    ModelKind,
    ModelRecord,
    RollbackStep,
)
from helpline.platform.registry_schema import alias_history, aliases, kb_versions, models

_A_KIND: dict[str, str] = {
    "base": "a base model",
    "adapter": "an adapter",
    "embedder": "an embedder",
    "detector": "a hallucination detector",
}


class ModelNameTakenError(ConfigError):
    """A model is registered under that name already."""

    http_status = 409


#: The advisory lock a registry write holds on PostgreSQL ("registry" in ASCII; the migration lock is another).
_WRITE_LOCK = 0x7265676973747279
_SCRIPTS = Path(__file__).parent / "registry_alembic"


class Registry:
    """The registry on the SQLite file ``db_path``, or on the PostgreSQL database ``url`` (``database_url``) when
    one is given. Each call takes its own connection, so it is safe across threads.

    ``db_path`` is the workspace's ``registry.sqlite`` either way, and callers find the workspace as its folder;
    with ``url`` set the file is not written (the rows live in PostgreSQL)."""

    def __init__(self, db_path: str | Path, *, url: str | None = None) -> None:
        self.db_path = Path(db_path)
        self.url = url
        self.engine = database.engine_for(self.db_path, url, busy_timeout_s=30, foreign_keys=True, keep_open=False)
        if url is None:
            with self.engine.connect() as db:
                legacy_version(db, self.db_path)  # a file from a newer helpline is refused even when stamped
        database.migrate(self.engine, url, scripts=_SCRIPTS, version_table="registry_alembic_version",
                         what="the registry")  # fmt: skip

    @property
    def location(self) -> str:
        """Where the rows are, for messages: the SQLite file, or the PostgreSQL address without its password."""
        return str(self.db_path) if self.url is None else database.masked(self.url)

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        """A connection whose writes are committed when the block ends without an error."""
        with self.engine.begin() as db:
            yield db

    @contextmanager
    def _writing(self) -> Iterator[Connection]:
        """A transaction that reads and then writes, which other writers wait for until it ends."""
        with self.engine.connect() as db:
            database.lock(db, _WRITE_LOCK)
            yield db
            db.commit()

    # models -------------------------------------------------------------------------------

    def register_model(
        self,
        name: str,
        *,
        kind: ModelKind,
        path: str | Path,
        base_model: str | None = None,
        metadata: dict[str, Any] | None = None,
        replace: bool = False,
    ) -> ModelRecord:
        """Add a model entry. A name already registered is refused (:class:`ModelNameTakenError`, naming a
        free one) unless ``replace``, and even then while anything refers to the model: an alias, an
        alias's history (a rollback may return to it) or a gate verdict. New weights under such a name
        would go live, or be promoted, without passing the gate."""
        record = ModelRecord(
            name=name,
            kind=kind,
            path=str(path),
            base_model=base_model,
            created_at=time.time(),
            metadata=metadata or {},
        )
        with self._writing() as db:  # the check and the write in one transaction
            _refuse_taken(db, name, replace=replace)
            database.upsert(db, models, {
                "name": name, "kind": kind, "path": record.path, "base_model": base_model,
                "created_at": record.created_at, "metadata": json.dumps(record.metadata),
            })  # fmt: skip
        return record

    def check_name_free(self, name: str, *, replace: bool = False) -> None:
        """Raise :class:`ModelNameTakenError` where ``register_model(name, replace=replace)`` would, so that
        a job which ends by registering refuses before it spends its time or writes anything."""
        with self._connect() as db:
            _refuse_taken(db, name, replace=replace)

    def get_model(self, name: str) -> ModelRecord:
        """Look a model up by name or alias."""
        with self._connect() as db:
            row = _row(db, name)
            if row is None:
                alias = db.scalar(select(aliases.c.model_name).where(aliases.c.alias == name))
                if alias is not None:
                    row = _row(db, alias)
        if row is None:
            known = ", ".join(m.name for m in self.list_models()) or "none"
            raise NotFoundError(
                f"no model or alias named {name!r} in the registry (known: {known})",
                hint="run `helpline models list`, or `helpline models import` for the bundled ones",
            )
        return _model(row)

    def chat_model(self, name: str) -> ModelRecord:
        """Look up, by name or alias, a model that can answer customers (a base model or an adapter): an
        embedder or a hallucination detector named where a chat model belongs is refused with what to pass
        instead. Everything that needs a chat model asks here."""
        record = self.get_model(name)
        if record.kind not in CHAT_KINDS:
            names = [m.name for m in self.list_models() if m.kind in CHAT_KINDS]
            chat = ", ".join(names[:6]) or "none"
            if len(names) > 6:
                chat += f" and {len(names) - 6} more"
            raise ConfigError(
                f"{record.name!r} is {_A_KIND[record.kind]}, not a chat model",
                hint=f"name a base model or adapter (registered: {chat}); `helpline models list` shows each kind",
            )
        return record

    def base_of(self, record_or_name: ModelRecord | str) -> ModelRecord:
        """The base model an adapter (a record, or a name or alias) was trained on; any other model is its
        own base. An adapter whose base is not registered (or is no base model) is refused."""
        record = self.get_model(record_or_name) if isinstance(record_or_name, str) else record_or_name
        if record.kind != "adapter":
            return record
        hint = "register its base model again (`helpline models import` for the bundled ones), or re-export the adapter"
        if not record.base_model:
            raise NotFoundError(f"adapter {record.name!r} does not name its base model", hint=hint)
        try:
            base = self.get_model(record.base_model)
        except NotFoundError as e:
            raise NotFoundError(
                f"adapter {record.name!r} is for base model {record.base_model!r}, which is not registered", hint=hint
            ) from e
        if base.kind != "base":
            raise ConfigError(
                f"adapter {record.name!r} names {base.name!r} as its base model, but that is {_A_KIND[base.kind]}",
                hint=hint,
            )
        return base

    def update_metadata(self, name: str, updates: dict[str, Any]) -> ModelRecord:
        """Merge ``updates`` into a model's metadata (its other fields and creation time stay)."""
        record = self.get_model(name)
        metadata = {**record.metadata, **updates}
        with self._connect() as db:
            db.execute(update(models).where(models.c.name == record.name).values(metadata=json.dumps(metadata)))
        return record.model_copy(update={"metadata": metadata})

    def list_models(self, kind: ModelKind | None = None) -> list[ModelRecord]:
        with self._connect() as db:
            query = select(models).order_by(models.c.created_at)
            rows = db.execute(query if kind is None else query.where(models.c.kind == kind)).mappings().all()
        return [_model(r) for r in rows]

    # aliases ------------------------------------------------------------------------------

    def set_alias(self, alias: str, model_name: str, *, actor: str = "") -> AliasChange:
        """Point ``alias`` at ``model_name`` (a registered chat model), keeping history."""
        target = self.chat_model(model_name).name
        with self._writing() as db:
            return _point(db, alias, target, actor=actor, action="set")

    def aliases(self) -> dict[str, str]:
        with self._connect() as db:
            rows = db.execute(select(aliases.c.alias, aliases.c.model_name).order_by(aliases.c.alias)).all()
        return {alias: model for alias, model in rows}

    def alias_history(self, alias: str) -> list[AliasChange]:
        with self._connect() as db:
            h = alias_history.c
            query = select(h.alias, h.model_name, h.previous, h.at, h.actor, h.action).where(h.alias == alias)
            rows = db.execute(query.order_by(h.id)).mappings().all()
        return [AliasChange(**dict(r)) for r in rows]

    def rollback_step(self, alias: str) -> RollbackStep:
        """Where rolling ``alias`` back would take it; :class:`NotFoundError` when nowhere."""
        with self._connect() as db:
            return _rollback_step(db, alias)

    def rollback(self, alias: str, *, actor: str = "", expect: str | None = None) -> AliasChange:
        """Point ``alias`` one step back in its history. Each rollback undoes one promotion, so a second
        one goes to the model before that, never back to the model just rolled back.

        The mechanism only, as :meth:`set_alias` is: edges roll back through
        :func:`helpline.platform.promotion.rollback`, which holds the step to the promotion rule. ``expect``
        is the target that rule approved; the rollback is refused if the alias moved meanwhile."""
        with self._writing() as db:
            step = _rollback_step(db, alias)
            if expect is not None and step.model_name != expect:
                raise ConfigError(
                    f"alias {alias!r} changed while it was being rolled back (it would now go to {step.model_name})",
                    hint="check `helpline models list` and roll back again",
                )
            return _point(db, alias, step.model_name, actor=actor, action="rollback")

    # knowledge-base versions --------------------------------------------------------------

    def record_kb_version(
        self, *, added: int, updated: int, deleted: int, content_hash: str, note: str = ""
    ) -> KBVersion:
        now = time.time()
        with self._connect() as db:
            values = {"created_at": now, "added": added, "updated": updated, "deleted": deleted,
                      "content_hash": content_hash, "note": note}  # fmt: skip
            version_id = int(db.execute(insert(kb_versions).values(**values)).inserted_primary_key[0])
        return KBVersion(
            id=version_id,
            created_at=now,
            added=added,
            updated=updated,
            deleted=deleted,
            content_hash=content_hash,
            note=note,
        )

    def kb_versions(self) -> list[KBVersion]:
        with self._connect() as db:
            rows = db.execute(select(kb_versions).order_by(kb_versions.c.id)).mappings().all()
        return [KBVersion(**dict(r)) for r in rows]


def _row(db: Connection, name: str) -> Mapping[str, Any] | None:
    return db.execute(select(models).where(models.c.name == name)).mappings().first()


def _refuse_taken(db: Connection, name: str, *, replace: bool) -> None:
    row = _row(db, name)
    if row is None:
        return
    uses = _uses(db, _model(row))
    if replace and not uses:
        return
    free = next(f"{name}-{i}" for i in range(2, 10_000) if not _exists(db, f"{name}-{i}"))
    if uses:
        raise ModelNameTakenError(
            f"{name!r} already exists in the registry and is in use ({'; '.join(uses)}), so its weights stay",
            hint=f"register the new model under a new name (e.g. {free}) and promote that one through the gate",
        )
    raise ModelNameTakenError(
        f"{name!r} already exists in the registry ({row['kind']} at {row['path']})",
        hint=f"choose a new name (e.g. {free})",
    )


def _uses(db: Connection, record: ModelRecord) -> list[str]:
    """What refers to a model by its name: aliases, alias histories and a gate verdict."""
    pointing = list(db.scalars(select(aliases.c.alias).where(aliases.c.model_name == record.name)))
    uses = [f"alias {a!r} points at it" for a in sorted(pointing)]
    h = alias_history.c
    history = db.scalars(
        select(h.alias).distinct().where((h.model_name == record.name) | (h.previous == record.name)).order_by(h.alias)
    ).all()
    uses += [f"it is in the history of {a!r} (a rollback may return to it)" for a in history
             if a not in pointing]  # fmt: skip
    gate = record.metadata.get("gate")
    if gate:
        uses.append(f"it has a {'passed' if gate.get('passed') else 'failed'} gate record")
    return uses


def _exists(db: Connection, name: str) -> bool:
    return db.scalar(select(models.c.name).where(models.c.name == name)) is not None


def _point(db: Connection, alias: str, target: str, *, actor: str, action: Literal["set", "rollback"]) -> AliasChange:
    """Point ``alias`` at ``target`` and write the change to its history."""
    now = time.time()
    previous = db.scalar(select(aliases.c.model_name).where(aliases.c.alias == alias))
    database.upsert(db, aliases, {"alias": alias, "model_name": target, "updated_at": now})
    db.execute(insert(alias_history).values(
        alias=alias, model_name=target, previous=previous, at=now, actor=actor, action=action
    ))  # fmt: skip
    return AliasChange(alias=alias, model_name=target, previous=previous, at=now, actor=actor, action=action)


def _rollback_step(db: Connection, alias: str) -> RollbackStep:
    current = db.scalar(select(aliases.c.model_name).where(aliases.c.alias == alias))
    if current is None:
        raise NotFoundError(f"alias {alias!r} is not set", hint="promote a model first: `helpline models promote`")
    h = alias_history.c
    rows = db.execute(select(h.model_name, h.action).where(h.alias == alias).order_by(h.id)).mappings().all()
    served = _served(rows)
    if len(served) < 2:
        raise NotFoundError(
            f"alias {alias!r} has no earlier model to roll back to (it serves the first model its history holds, "
            "every later promotion having been rolled back)",
            hint="promote the model you want instead: `helpline models promote NAME` (it needs a passing gate)",
        )
    return RollbackStep(
        alias=alias, current=current, model_name=served[-2], undoes_promotion=rows[-1]["action"] == "set"
    )


def _served(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """What an alias has served, oldest first, with every rolled-back promotion taken out: the last is what
    it serves now, the one before it is where the next rollback goes."""
    served: list[str] = []
    for row in history:
        if row["action"] == "rollback" and served:
            served.pop()
        if row["model_name"] and (not served or served[-1] != row["model_name"]):
            served.append(row["model_name"])
    return served


def _model(row: Mapping[str, Any]) -> ModelRecord:
    data = dict(row)
    data["metadata"] = json.loads(data["metadata"])
    return ModelRecord(**data)
