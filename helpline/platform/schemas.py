"""Schemas shared by every area (and by the UI, which may import nothing heavier)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Access = Literal["public", "internal"]
Role = Literal["system", "user", "assistant"]


class Document(BaseModel):
    """A source document in the knowledge base."""

    doc_id: str = Field(description="Stable id, e.g. the file's slug or a path.")
    title: str
    text: str
    source: str = Field("", description="Where it came from (path or URL).")
    access: Access = "public"
    metadata: dict[str, str] = Field(default_factory=dict)


class Chunk(BaseModel):
    """A searchable passage of a document."""

    chunk_id: str
    doc_id: str
    title: str
    text: str
    section: str = Field("", description="Heading path inside the document, e.g. 'Refunds > Cards'.")
    source: str = ""
    access: Access = "public"
    content_hash: str = ""


class ScoredChunk(BaseModel):
    """A chunk with its retrieval score (higher is more relevant)."""

    chunk: Chunk
    score: float
    #: The signals behind ``score``: the embedding similarity (cosine) and the BM25 score, each the best
    #: over the searched texts; None where that search did not run or did not rank this chunk.
    dense: float | None = None
    lexical: float | None = None


class Citation(BaseModel):
    """A passage an answer is based on."""

    doc_id: str
    title: str
    chunk_id: str
    score: float
    text: str | None = Field(None, description="The passage itself, when asked for.")


class ChatMessage(BaseModel):
    """One turn of a conversation."""

    role: Role
    content: str


class Answer(BaseModel):
    """What the assistant answers, with its sources."""

    answer: str
    citations: list[Citation] = Field(default_factory=list)
    model: str
    latency_ms: float
    abstained: bool = False
    outcome: Literal["answered", "fallback", "handoff", "corrected"] = Field(
        "answered",
        description="answered: the generated answer; fallback: the passage's own words quoted; handoff: "
        "no passage answers, so how to reach a person; corrected: staff's correction of the same question.",
    )
