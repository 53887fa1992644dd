"""Which engine answers a request: aliases, canary share, and hot-swapped adapters.

The registry is the source of truth for aliases and is read on every request (one SQLite read),
so a promotion is atomic: a request resolves its route once and keeps it, so requests in flight
finish on the model they started with while new ones see the new alias.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from helpline.engines.hf import TransformersGenerator
from helpline.engines.openai_http import OpenAIGenerator
from helpline.engines.protocol import Generator
from helpline.platform.errors import ConfigError, NotFoundError
from helpline.platform.lazy_imports import require
from helpline.platform.promotion import require_passing_gate, rollback_target
from helpline.platform.registry import CHAT_KINDS, AliasChange, ModelRecord, Registry

log = logging.getLogger("helpline.gateway")
#: How often a gateway re-reads the stored canary share (set by the admin route or `helpline improve`).
SHARE_REFRESH_S = 2.0
#: Public model ids (what clients put in `model`) → registry aliases.
PUBLIC_ALIASES = {"helpline-support": "production", "helpline-support-canary": "canary"}


class Backend(Protocol):
    """Turns a registered model into a generator (loading an adapter into the engine if needed)."""

    def generator_for(self, record: ModelRecord) -> Generator: ...


@dataclass(frozen=True)
class Route:
    """Where one request goes."""

    requested: str
    alias: str | None
    record: ModelRecord
    generator: Generator

    @property
    def adapter(self) -> str | None:
        return self.record.name if self.record.kind == "adapter" else None


def canary_bucket(conversation_id: str) -> int:
    """A stable 0-99 bucket per conversation, so a conversation never flips between models."""
    return int(hashlib.sha256(conversation_id.encode()).hexdigest()[:8], 16) % 100


class ModelRouter:
    """Resolves `model` names to generators; promotes and rolls back aliases."""

    def __init__(self, registry: Registry, backend: Backend, *, canary_share: float = 0.0) -> None:
        self.registry = registry
        self.backend = backend
        self._share = canary_share
        self._share_source: Callable[[], float | None] | None = None
        self._share_read_at = float("-inf")
        self._lock = threading.Lock()

    def follow_share(self, source: Callable[[], float | None], *, every_s: float | None = None) -> None:
        """Read the canary share from ``source`` (the gateway store's setting) at most every ``every_s``
        seconds, so a share set by another process (`helpline improve`, another replica) takes effect
        without a restart. A source that fails keeps the last share."""
        self._share_source = source
        self._share_every_s = SHARE_REFRESH_S if every_s is None else every_s
        self._share_read_at = float("-inf")

    @property
    def canary_share(self) -> float:
        now = time.monotonic()
        if self._share_source is not None and now - self._share_read_at >= self._share_every_s:
            self._share_read_at = now
            try:
                value = self._share_source()
            except Exception as e:  # a store that cannot be read (a full disk) must not fail routing
                log.warning("canary share not re-read: %s: %s", type(e).__name__, e)
                value = None
            if value is not None and 0 <= value <= 100:
                self._share = value
        return self._share

    def public_models(self, *, aliases_only: bool = False) -> list[str]:
        """Ids a client may put in `model`: the public aliases that point somewhere and, unless
        ``aliases_only`` (what a customer may address), every registered chat model."""
        aliases = self.registry.aliases()
        ids = [pub for pub, alias in PUBLIC_ALIASES.items() if alias in aliases]
        if aliases_only:
            return ids
        chat = [m.name for m in self.registry.list_models() if m.kind in CHAT_KINDS]
        return ids + chat

    def _record(self, alias_or_name: str) -> ModelRecord:
        return self.registry.chat_model(alias_or_name)

    def resolve(self, model: str, *, conversation_id: str) -> Route:
        """The route for one request; `helpline-support` sends the canary share to the canary."""
        alias = PUBLIC_ALIASES.get(model)
        if alias is None and model in ("production", "canary"):
            alias = model
        wants_canary = self.canary_share > 0 and canary_bucket(conversation_id) < self.canary_share
        if alias == "production" and wants_canary and "canary" in self.registry.aliases():
            alias = "canary"
        try:
            record = self._record(alias or model)
        except NotFoundError as e:
            # The hint names only the public ids: whoever asked may be a customer, who is not shown adapters.
            raise NotFoundError(
                f"model {model!r} does not exist",
                hint=f"use {' or '.join(PUBLIC_ALIASES)}; GET /v1/models lists the models your key may use",
            ) from e
        return Route(requested=model, alias=alias, record=record, generator=self.backend.generator_for(record))

    def promote(self, name: str, *, alias: str = "production", actor: str, force: bool = False) -> AliasChange:
        """Check the gate, load ``name`` into the engine (a broken adapter never goes live), then switch."""
        record = self._record(name)
        if not force:
            require_passing_gate(self.registry, record.name)
        self.backend.generator_for(record)
        with self._lock:
            return self.registry.set_alias(alias, record.name, actor=actor)

    def rollback(self, alias: str = "production", *, actor: str) -> AliasChange:
        """Point ``alias`` one step back in its history under the promotion rule (a target further back
        than the latest promotion needs its gate), loading the target first."""
        target = rollback_target(self.registry, alias)
        self.backend.generator_for(self._record(target))
        with self._lock:
            return self.registry.rollback(alias, actor=actor, expect=target)

    def set_canary_share(self, percent: float) -> None:
        if not 0 <= percent <= 100:
            raise ConfigError(f"canary share must be between 0 and 100, not {percent}")
        self._share = percent
        self._share_read_at = time.monotonic()


class VLLMBackend:
    """Generators that talk to one vLLM server; adapters are loaded into it on first use."""

    def __init__(
        self, *, base_url: str, base_model: str, server=None, timeout_s: float = 120.0, max_model_len: int | None = None
    ) -> None:
        openai = require("openai", "serve")
        self.base_url = base_url
        self.max_model_len = max_model_len  # the server's --max-model-len, which every served name shares
        self.base_model = base_model
        self.server = server  # a VLLMServer we supervise, an ExternalVLLM (vllm.url), or None: base model only
        self.timeout_s = timeout_s
        self._client = openai.AsyncOpenAI(base_url=base_url, api_key="unused", timeout=timeout_s, max_retries=0)
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()

    @staticmethod
    def served_name(record: ModelRecord) -> str:
        """A new name per adapter version: re-registering an adapter under the same registry name
        never reuses the engine's cached weights."""
        if record.kind != "adapter":
            return record.name
        digest = hashlib.sha256(f"{record.path}:{record.created_at}".encode()).hexdigest()[:8]
        return f"{record.name}-{digest}"

    def generator_for(self, record: ModelRecord) -> Generator:
        name = self.served_name(record)
        with self._lock:
            if name in self._generators:
                return self._generators[name]
            if record.kind == "adapter":
                if record.base_model != self.base_model:
                    raise ConfigError(
                        f"adapter {record.name!r} is for {record.base_model!r}, but vLLM serves {self.base_model!r}",
                        hint="promote an adapter trained on the served base model",
                    )
                if self.server is None:
                    raise ConfigError(
                        "this gateway cannot load adapters into the vLLM server it was given",
                        hint="start it with `helpline run`, or set vllm.url so that adapters load at run time",
                    )
                if name not in self.server.lora_modules:
                    self.server.load_lora(name, record.path)
            gen = OpenAIGenerator(
                self.base_url,
                name,
                timeout_s=self.timeout_s,
                async_client=self._client,
                max_model_len=self.max_model_len,
            )
            self._generators[name] = gen
            return gen

    def loaded_adapters(self) -> dict[str, str]:
        """Adapters to pass as --lora-modules at start-up (every registered one for this base)."""
        return dict(self.server.lora_modules) if self.server is not None else {}


class TransformersBackend:
    """In-process generators (the fallback engine); one loaded model per registry entry."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._generators: dict[str, Generator] = {}
        self._lock = threading.Lock()

    def generator_for(self, record: ModelRecord) -> Generator:
        with self._lock:
            key = f"{record.name}:{record.created_at}"
            if key not in self._generators:
                if record.kind == "adapter":
                    base = self.registry.base_of(record)
                    gen = TransformersGenerator(base.path, adapter_path=record.path, name=record.name)
                else:
                    gen = TransformersGenerator(record.path, name=record.name)
                self._generators[key] = gen
            return self._generators[key]


def startup_adapters(registry: Registry, base_model: str, *, chat_model: str | None = None) -> dict[str, str]:
    """Served name → path of the adapters an alias points at, and of ``chat_model`` when it is an
    adapter (passed as --lora-modules at start, so the engine's own endpoint lists them too).

    Only those: any other adapter loads on first use, so one broken adapter in the registry
    cannot keep the engine from starting.
    """

    out = {}
    for target in {*registry.aliases().values(), *([chat_model] if chat_model else [])}:
        m = registry.get_model(target)
        if m.kind == "adapter" and m.base_model == base_model and (Path(m.path) / "adapter_config.json").is_file():
            out[VLLMBackend.served_name(m)] = m.path
    return out
