"""The attack suite's file: what a case in ``attacks.yaml`` says, and how it becomes a request.

The file holds no internal article text and no system prompt (the detectors in ``leaks.py`` read those
from the package when the suite runs); it holds placeholders that ``fill`` replaces per case.
"""

from __future__ import annotations

import json
import random
import string
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from helpline.platform.errors import ConfigError

Kind = Literal[
    "kb_injection", "passage_breakout", "prompt_extraction", "internal_request", "forged_turn", "malformed_body"
]
KINDS: tuple[str, ...] = Kind.__args__
Check = Literal["internal", "system_prompt", "canary", "forged_export"]


class DocumentSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    title: str
    text: str
    via: Literal["json", "file"] = "json"


class RequestSpec(BaseModel):
    """A raw request: ``json``, ``raw`` text, ``raw_hex`` bytes, or a ``generate``d body of ``size``."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    method: str = "POST"
    path: str = "/v1/chat/completions"
    json_body: Any = Field(None, alias="json")
    raw: str | None = None
    raw_hex: str | None = None
    generate: (
        Literal[
            "oversize_chat",
            "long_message",
            "many_messages",
            "deep_nesting",
            "long_conversation_id",
            "oversize_document",
        ]
        | None
    ) = None
    size: int = 0
    chunked: bool = False
    headers: dict[str, str] = Field(default_factory=dict)


class AttackCase(BaseModel):
    """One attack; see the header of ``attacks.yaml`` for the fields."""

    model_config = ConfigDict(extra="forbid")
    id: str
    kind: Kind
    what: str
    role: Literal["customer", "staff"] = "customer"
    messages: list[dict[str, Any]] | None = None
    stream: bool = False
    model: str = "helpline-support"
    extra: dict[str, Any] = Field(default_factory=dict)
    prelude: str | None = None
    document: DocumentSpec | None = None
    request: RequestSpec | None = None
    staff_chat: str | None = None
    feedback: Literal["up", "correction", "review"] | None = None
    checks: list[Check] = Field(default_factory=list)
    expect_status: list[int] = Field(default_factory=list)


def load_attacks(path: Path | None = None) -> list[AttackCase]:
    """The suite (``attacks.yaml`` shipped beside this module, unless ``path``), validated."""
    text = path.read_text("utf-8") if path else resources.files(__package__).joinpath("attacks.yaml").read_text("utf-8")
    try:
        cases = [AttackCase(**row) for row in yaml.safe_load(text)]
    except (TypeError, ValueError) as e:
        raise ConfigError(f"the attack suite does not load: {e}", hint="see the header of attacks.yaml") from e
    ids = [c.id for c in cases]
    if len(set(ids)) != len(ids):
        raise ConfigError("attack ids must be unique", hint=f"repeated: {[i for i in ids if ids.count(i) > 1]}")
    return cases


def code_word(prefix: str) -> str:
    """A unique word of capitals only: no scrubber or tokenizer treats it as a number, date or name part."""
    return prefix + "".join(random.choices(string.ascii_uppercase, k=10))


def raw_body(spec: RequestSpec, values: dict[str, str]) -> dict[str, Any]:
    """httpx arguments for the request's body: as written, or generated to the size the case asks for."""
    headers = dict(spec.headers)
    if spec.generate:
        content = _generated(spec.generate, spec.size)
        headers.setdefault("Content-Type", "application/json")
        body: Any = (content[i : i + 65536] for i in range(0, len(content), 65536)) if spec.chunked else content
        return {"content": body, "headers": headers}
    if spec.raw_hex is not None:
        return {"content": bytes.fromhex(spec.raw_hex), "headers": {"Content-Type": "application/json", **headers}}
    if spec.raw is not None:
        return {"content": fill(spec.raw, values).encode(), "headers": {"Content-Type": "application/json", **headers}}
    return {"json": fill(spec.json_body, values), "headers": headers}


def _generated(kind: str, size: int) -> bytes:
    def chat(content: str, **extra: Any) -> bytes:
        body = {
            "model": "helpline-support",
            "max_tokens": 16,
            **extra,
            "messages": [{"role": "user", "content": content}],
        }
        return json.dumps(body).encode()

    if kind in ("oversize_chat", "long_message"):
        return chat("a " * (size // 2))
    if kind == "many_messages":
        return json.dumps(
            {"model": "helpline-support", "messages": [{"role": "user", "content": "hi"}] * size}
        ).encode()
    if kind == "deep_nesting":
        return ("[" * size + "]" * size).encode()
    if kind == "long_conversation_id":
        return chat("Hi", conversation_id="c" * size)
    docs = [{"doc_id": "bench-oversize", "title": "Oversize", "text": "word " * (size // 5), "access": "public"}]
    return json.dumps({"documents": docs}).encode()


def fill(value: Any, values: dict[str, str]) -> Any:
    """``value`` (a string, or a message whose content may be a list of text parts) with its placeholders
    replaced; ``{long:N}`` becomes N letters."""
    if isinstance(value, dict):
        return {k: fill(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, values) for v in value]
    if not isinstance(value, str):
        return value
    for placeholder, replacement in values.items():
        value = value.replace(placeholder, replacement)
    if "{long:" in value:
        head, _, rest = value.partition("{long:")
        count, _, tail = rest.partition("}")
        value = head + "x" * int(count) + tail
    return value
