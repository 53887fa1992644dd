"""The error hierarchy. Each error carries a hint that tells the user what to do next.

Errors are raised deep in the code and converted once at each edge: the CLI prints
``message`` and ``hint`` and exits non-zero, the gateway returns an OpenAI-shaped error body,
the UI shows ``st.error``.
"""

from __future__ import annotations

from typing import Any


class HelplineError(Exception):
    """Base class of every error helpline raises on purpose."""

    exit_code = 1
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class ConfigError(HelplineError):
    """Settings or a config file are invalid."""

    exit_code = 2
    http_status = 400


class NotFoundError(HelplineError):
    """A named model, alias, document or file does not exist."""

    http_status = 404


class DataError(HelplineError):
    """An input file or dataset is malformed."""

    exit_code = 2
    http_status = 422


class MissingDependencyError(HelplineError):
    """An optional dependency is not installed; the hint names the extra to install."""


class EngineError(HelplineError):
    """The generation engine failed or is not reachable."""

    http_status = 503


class WorkspaceNotReadyError(HelplineError):
    """The workspace has not been initialised yet."""

    http_status = 503

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint or "run `helpline init` first")


def validation_problems(errors: list[Any], *, prefix: str = "") -> list[str]:
    """Pydantic's ``e.errors()`` as ``field.path: message`` lines, so a user sees every problem at once."""
    return [f"{prefix}{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in errors]
