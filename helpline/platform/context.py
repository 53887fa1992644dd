"""The objects every command needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from helpline.platform.registry import Registry
from helpline.platform.settings import Settings, load_settings
from helpline.platform.workspace import Workspace


@dataclass
class Context:
    """Settings, the workspace and the registry of one invocation."""

    settings: Settings

    @classmethod
    def load(cls, **overrides: object) -> Context:
        return cls(load_settings(**overrides))

    @cached_property
    def workspace(self) -> Workspace:
        return Workspace.at(self.settings.workspace).ensure()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.workspace.registry_db)
