"""Reading the files a user points helpline at: JSON Lines datasets, YAML configs, model folders.

Every problem is reported with the file (and line) it is on and what the file needs, instead of a
``UnicodeDecodeError``, ``yaml.YAMLError`` or ``KeyError`` from deep inside a command.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from helpline.platform.errors import ConfigError, DataError, NotFoundError

# doc2dial's layout (../shared/data/doc2dial and any file in its format): what each reader needs.


def read_jsonl(path: str | Path, *, required: Iterable[str] = (), hint: str | None = None) -> list[dict[str, Any]]:
    """The JSON objects of ``path``, one per non-blank line, each with the ``required`` fields."""
    path = Path(path)
    need = tuple(required)
    if not path.is_file():
        raise NotFoundError(f"{path} does not exist", hint=hint or "pass the path of an existing JSONL file")
    rows: list[dict[str, Any]] = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 text ({e.reason})", hint="save the file as UTF-8") from e
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({e.msg}, column {e.colno})",
                    hint="each line must be one JSON object",
                ) from e
            if not isinstance(row, dict):
                raise DataError(
                    f"{path}:{lineno}: a JSON {type(row).__name__}, not an object",
                    hint="each line must be one JSON object",
                )
            missing = [k for k in need if row.get(k) is None]
            if missing:
                raise DataError(
                    f"{path}:{lineno}: missing {', '.join(repr(k) for k in missing)}",
                    hint=f"each line needs {', '.join(need)}",
                )
            rows.append(row)
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """One JSON object per line (UTF-8, non-ASCII kept), the folder made if needed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")


def read_yaml(path: str | Path, *, what: str, hint: str) -> Any:
    """What a YAML file holds (None when it is empty)."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"{what} {path} does not exist", hint=hint)
    try:
        return yaml.safe_load(path.read_text("utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(f"{what} {path} is not UTF-8 text ({e.reason})", hint=hint) from e
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} {path} is not valid YAML ({e})", hint=hint) from e


def read_yaml_mapping(path: str | Path, *, what: str, hint: str) -> dict[str, Any]:
    """A YAML file that must hold a mapping (a config or preset); an empty file is an empty mapping."""
    data = read_yaml(path, what=what, hint=hint)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} holds a {type(data).__name__}, not a mapping of keys to values", hint=hint)
    return data


def yaml_value(key: str, text: str) -> Any:
    """The value of a ``key=value`` override, read as YAML (numbers, booleans, lists, null)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(
            f"override {key}={text!r}: the value is not valid YAML", hint="quote it, e.g. key='a: b'"
        ) from e


def has_chat_template(folder: str | Path) -> bool:
    """Whether a model folder carries a chat template: ``chat_template.jinja`` (or ``.json``), or the
    ``chat_template`` field of its ``tokenizer_config.json``."""
    folder = Path(folder)
    if (folder / "chat_template.jinja").exists() or (folder / "chat_template.json").exists():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError, AttributeError):
        return False
