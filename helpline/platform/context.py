"""The objects every command needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from helpline.platform.registry import Registry
from helpline.platform.settings import Settings, load_settings
from helpline.platform.workspace import Workspace


@dataclass(init=False)
class Context:
    """Settings, the workspace and the registry of one invocation: the first argument of every factory.

    ``Context(settings)`` opens the workspace and the registry that ``settings.workspace`` names, each on
    first use. Pass ``workspace`` or ``registry`` to use others instead (a throwaway copy of the registry,
    a scratch workspace in a test).
    """

    settings: Settings

    def __init__(
        self, settings: Settings, *, workspace: Workspace | None = None, registry: Registry | None = None
    ) -> None:
        self.settings = settings
        # A given part seeds its cached property; a missing one is derived from the settings when first read.
        if workspace is not None:
            self.__dict__["workspace"] = workspace
        if registry is not None:
            self.__dict__["registry"] = registry

    @classmethod
    def load(cls, **overrides: object) -> Context:
        return cls(load_settings(**overrides))

    @cached_property
    def workspace(self) -> Workspace:
        return Workspace.at(self.settings.workspace).ensure()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.workspace.registry_db)

    def with_settings(self, **updates: object) -> Context:
        """The same workspace and registry under settings with ``updates`` (e.g. ``chat_model=name``).
        To change the workspace, build a new ``Context`` instead."""
        return Context(self.settings.model_copy(update=updates), workspace=self.workspace, registry=self.registry)
