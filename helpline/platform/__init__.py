"""Settings, workspace, errors, shared schemas and the registry (no heavy dependencies)."""

from helpline.platform.errors import HelplineError
from helpline.platform.settings import Settings, load_settings
from helpline.platform.workspace import Workspace

__all__ = ["HelplineError", "Settings", "Workspace", "load_settings"]
