"""What the registry stores, as the rest of the package reads it: models, knowledge-base versions,
alias changes."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

ModelKind = Literal["base", "adapter", "embedder", "detector"]

#: The kinds that can answer customers (an alias may point only at one of them).
CHAT_KINDS: tuple[ModelKind, ...] = ("base", "adapter")


class ModelRecord(BaseModel):
    """A registered base model, adapter, embedder or hallucination detector with its lineage metadata."""

    name: str
    kind: ModelKind
    path: str
    base_model: str | None = None
    created_at: float
    metadata: dict[str, Any] = Field(default_factory=dict)


class KBVersion(BaseModel):
    """One knowledge-base sync."""

    id: int
    created_at: float
    added: int
    updated: int
    deleted: int
    content_hash: str
    note: str = ""


class AliasChange(BaseModel):
    """One entry of an alias's history: a promotion (``set``) or a ``rollback``."""

    alias: str
    model_name: str | None
    previous: str | None
    at: float
    actor: str = ""
    action: Literal["set", "rollback"] = "set"


class RollbackStep(BaseModel):
    """Where rolling ``alias`` back would take it: ``model_name``, the model before ``current`` in the alias's
    history once earlier rollbacks are taken out. ``undoes_promotion``: ``current`` came by a promotion, so
    the step restores exactly what the alias served just before it."""

    alias: str
    current: str
    model_name: str
    undoes_promotion: bool
