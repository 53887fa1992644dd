"""The objects every command needs, built once from settings."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from helpline.platform.registry import Registry
from helpline.platform.settings import Settings, load_settings
from helpline.platform.tracking import Tracker, open_tracker
from helpline.platform.workspace import Workspace


@dataclass(init=False)
class Context:
    """Settings, the workspace, the registry and the run tracker of one invocation: the first argument of every
    factory.

    ``Context(settings)`` opens the workspace and the registry that ``settings.workspace`` names, and the tracker
    that ``settings.tracking`` asks for, each on first use. Pass ``workspace``, ``registry`` or ``tracker`` to use
    others instead (a throwaway copy of the registry, a scratch workspace in a test).
    """

    settings: Settings

    def __init__(
        self,
        settings: Settings,
        *,
        workspace: Workspace | None = None,
        registry: Registry | None = None,
        tracker: Tracker | None = None,
    ) -> None:
        self.settings = settings
        # A given part seeds its cached property; a missing one is derived from the settings when first read.
        if workspace is not None:
            self.__dict__["workspace"] = workspace
        if registry is not None:
            self.__dict__["registry"] = registry
        if tracker is not None:
            self.__dict__["tracker"] = tracker

    @classmethod
    def load(cls, **overrides: object) -> Context:
        return cls(load_settings(**overrides))

    @cached_property
    def workspace(self) -> Workspace:
        return Workspace.at(self.settings.workspace).ensure()

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.workspace.registry_db, url=self.settings.database_url)

    @cached_property
    def tracker(self) -> Tracker:
        return open_tracker(self.settings.tracking, self.workspace)

    def with_settings(self, **updates: object) -> Context:
        """The same workspace and registry under settings with ``updates`` (e.g. ``chat_model=name``).
        To change the workspace, build a new ``Context`` instead."""
        settings = self.settings.model_copy(update=updates)
        return Context(settings, workspace=self.workspace, registry=self.registry, tracker=self.__dict__.get("tracker"))
