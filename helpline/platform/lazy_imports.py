"""Import optional heavy dependencies where they are used, with an error that names the fix."""

from __future__ import annotations

import importlib
from types import ModuleType

from helpline.platform.errors import MissingDependencyError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an error naming the ``helpline[extra]`` that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingDependencyError(
            f"{module} is not installed ({e})",
            hint=f"pip install 'helpline[{extra}]'  (or run `make run`, which installs everything)",
        ) from e


def optional(module: str) -> ModuleType | None:
    """Import ``module`` if it is there (a library's optional part, another version's layout), else None."""
    try:
        return importlib.import_module(module)
    except ImportError:
        return None
