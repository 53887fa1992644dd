"""Prompt templates, stored as YAML data files in this folder."""

from __future__ import annotations

import re
from functools import lru_cache
from importlib import resources

import yaml
from pydantic import BaseModel

from helpline.platform.errors import ConfigError
from helpline.platform.schemas import ChatMessage, ScoredChunk


class PromptTemplate(BaseModel):
    """A versioned grounded-answer prompt."""

    name: str
    version: int
    system: str
    passage: str
    context: str
    abstain: str
    #: What the extractive fallback serves: ``{title}`` of the passage and the ``{quote}`` from it.
    fallback: str = 'Our help centre says ("{title}"):\n{quote}'

    def build(
        self,
        conversation: list[ChatMessage],
        passages: list[ScoredChunk],
        *,
        company: str = "Northwind Goods",
    ) -> list[ChatMessage]:
        """System policy and passages (fenced as data) followed by the conversation."""
        fenced = "\n".join(
            self.passage.format(
                index=i + 1, title=fence_safe(p.chunk.title, attribute=True), text=fence_safe(p.chunk.text)
            ).strip()
            for i, p in enumerate(passages)
        )
        system = self.system.format(company=company).strip()
        if passages:
            system += "\n\n" + self.context.format(passages=fenced).strip()
        turns = [m.model_copy(update={"content": inert(m.content)}) for m in conversation if m.role != "system"]
        return [ChatMessage(role="system", content=system), *turns]

    def abstention(self, handoff: str) -> str:
        return " ".join(self.abstain.format(handoff=handoff).split())


#: The passage fence's tag, opening or closing, in any case and spacing a model would still read as one.
_FENCE_TAG = re.compile(r"<(\s*/?\s*passage\b)", re.IGNORECASE)


#: Chat-template control tokens written as text (ChatML, Llama 3, Gemma, Mistral, sentencepiece). The engine
#: tokenizes the templated prompt with special tokens parsed, so such text in a message or a passage would
#: become a real turn boundary: a customer could open a fake system turn.
_CONTROL_TOKEN = re.compile(r"<(\|[A-Za-z0-9_]{1,40}\|>|(?:start|end)_of_turn>|/?s>)|\[(/?INST)\]")


def inert(text: str) -> str:
    """``text`` with every chat-template control token written so that it stays text (``&lt;|im_start|>``)."""
    return _CONTROL_TOKEN.sub(lambda m: f"&lt;{m.group(1)}" if m.group(1) else f"[ {m.group(2)} ]", text)


def fence_safe(text: str, *, attribute: bool = False) -> str:
    """``text`` as it may stand inside the passage fence: a passage (anyone who can upload a document
    writes one) must not close its fence and go on as instructions, so a fence tag in it loses its ``<``
    (``&lt;passage``); the rest of the text is kept as written. In an ``attribute`` (the title) quotes
    and angle brackets are escaped, so it cannot end the attribute or the tag."""
    if attribute:
        return text.replace('"', "&quot;").replace("<", "&lt;").replace(">", "&gt;")
    return _FENCE_TAG.sub(r"&lt;\1", inert(text))


@lru_cache(maxsize=8)
def load_prompt(name: str = "support") -> PromptTemplate:
    """Load ``prompts/<name>.yaml`` shipped with the package."""
    try:
        text = resources.files(__package__).joinpath(f"{name}.yaml").read_text("utf-8")
    except FileNotFoundError as e:
        raise ConfigError(f"no prompt named {name!r}", hint="see helpline/serving/prompts/") from e
    return PromptTemplate(**yaml.safe_load(text))
