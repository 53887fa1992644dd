"""The workspace: one folder holding models, indexes, the registry and logs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Workspace:
    """Paths inside a workspace folder. Creating the object touches nothing on disk."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Workspace:
        return cls(Path(root).expanduser().resolve())

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def adapters(self) -> Path:
        return self.root / "adapters"

    @property
    def indexes(self) -> Path:
        return self.root / "indexes"

    @property
    def crawl_state(self) -> Path:
        """Crawled websites' page validators (ETag, Last-Modified), so that a re-crawl skips unchanged pages."""
        return self.indexes / "crawl"

    @property
    def datasets(self) -> Path:
        return self.root / "datasets"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def registry_db(self) -> Path:
        return self.root / "registry.sqlite"

    def ensure(self) -> Workspace:
        """Create the folders (idempotent)."""
        for path in (self.models, self.adapters, self.indexes, self.datasets, self.reports, self.logs):
            path.mkdir(parents=True, exist_ok=True)
        return self
