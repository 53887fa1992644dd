"""API-key authentication and role checks, applied server-side to every route."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException, Request

from helpline.serving.gateway.store import ROLE_RANK, ApiKey, GatewayStore


@dataclass(frozen=True)
class Principal:
    """Who is calling."""

    key: ApiKey

    @property
    def role(self) -> str:
        return self.key.role

    @property
    def actor(self) -> str:
        """How the audit log names this caller (never the key itself)."""
        return f"{self.key.role}:{self.key.id}:{self.key.name or self.key.prefix}"

    @property
    def retrieval_role(self) -> str:
        """Customers see public documents only; everyone on our side also sees internal ones."""
        return "customer" if self.key.role == "customer" else "staff"


def presented_key(request: Request) -> str | None:
    """``Authorization: Bearer <key>`` (what OpenAI clients send) or ``X-API-Key``."""
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.headers.get("x-api-key")


def requires(minimum: str) -> Callable[[Request], Principal]:
    """A FastAPI dependency admitting keys whose role is at least ``minimum``."""

    def dependency(request: Request) -> Principal:
        store: GatewayStore = request.app.state.store
        key = presented_key(request)
        record = store.lookup(key) if key else None
        if record is None:
            raise HTTPException(
                401,
                "missing or invalid API key: send `Authorization: Bearer <key>` "
                "(create one with `helpline keys create --role customer`)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        principal = Principal(record)
        request.state.principal = principal  # also for the audit of a refusal: who was refused
        if ROLE_RANK[record.role] < ROLE_RANK[minimum]:
            raise HTTPException(403, f"this route needs the {minimum} role; your key has {record.role}")
        return principal

    return dependency
