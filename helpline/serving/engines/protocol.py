"""The interface every generation engine offers."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from helpline.platform.schemas import ChatMessage


@dataclass
class Generation:
    """One completed answer."""

    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@runtime_checkable
class Generator(Protocol):
    """Turns a conversation into an answer, whole or streamed."""

    name: str

    def generate(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Generation: ...

    def stream(self, messages: list[ChatMessage], *, max_tokens: int, temperature: float = 0.0) -> Iterator[str]: ...
