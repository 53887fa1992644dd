"""The gateway's settings (limits per request and key, detector, retention, who runs console jobs): a part of
``Settings``, split out by role."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class GatewayLimits(BaseModel):
    """What one request and one key may ask for. Oversize requests are refused, never truncated."""

    max_body_bytes: int = Field(256 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest knowledge-base file upload (staff routes under /console/kb/)."
    )
    max_messages: int = Field(64, ge=1, description="Most messages in one chat request.")
    max_message_chars: int = Field(8000, ge=1, description="Longest single message, in characters.")
    max_tokens: int = Field(1024, ge=1, description="Largest `max_tokens` a client may ask for.")
    context_tokens: int = Field(
        2048,
        ge=256,
        description="The model's context in tokens (prompt and answer) when the engine does not report its own "
        "(the vLLM engine reports vllm.max_model_len). Oldest history turns are dropped to fit; a question whose "
        "passages alone do not fit is refused with 413.",
    )
    requests_per_minute: int = Field(120, ge=1, description="Per-key rate limit (token bucket; 429 above).")
    burst: int = Field(30, ge=1, description="Requests a key may make at once before the rate applies.")
    max_concurrency: int = Field(64, ge=1, description="Chat requests generating at once (503 above).")
    upstream_timeout_s: float = Field(120.0, gt=0, description="Longest wait for the engine before 504.")
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 503 under overload.")
    retrieval_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Longest a chat request waits for retrieval (the knowledge-base search and fitting the prompt "
        "to the model's context) before 503 with Retry-After. A search takes milliseconds and never waits for a "
        "sync; this bounds a stuck or overloaded store, whose waiting requests never hold the threads that key "
        "checks run on.",
    )

    @model_validator(mode="after")
    def _burst_within_rate(self) -> GatewayLimits:
        if self.burst > self.requests_per_minute:
            raise ValueError(f"burst ({self.burst}) must not exceed requests_per_minute ({self.requests_per_minute})")
        return self


class GatewaySettings(BaseModel):
    """The HTTP gateway that customers and the UI talk to."""

    host: str = Field("127.0.0.1", description="Interface the gateway binds to.")
    port: int = Field(8000, description="Gateway port.")
    limits: GatewayLimits = Field(default_factory=GatewayLimits, description="Request, key and overload limits.")
    detector: str = Field(
        "auto",
        description="Hallucination detector that checks every answer against its passages: auto (the registered "
        "helpline-detector, none when there is none), none, or a registry name. A non-streamed answer it rejects "
        "is not served (the passage is quoted, or the handoff given); a streamed one is decided before it is sent.",
    )
    retention_days: int | None = Field(
        None,
        ge=1,
        description="Days a logged conversation turn is kept; None keeps them forever. Older turns go with their "
        "passages, withdrawn drafts, feedback, comments and staff corrections, at gateway startup, then daily, and "
        "with `helpline conversations purge`. Corrected turns go too: no dataset manifest refers to a turn (they "
        "name their source files by path and hash); the reviewed examples saved from corrections "
        "(datasets/reviewed/) are training sources and stay until `helpline conversations erase` removes them.",
    )
    job_runner: Literal["embedded", "external"] = Field(
        "embedded",
        description="Who runs the console's jobs (queued in the database): embedded, each gateway (a thread); "
        "external, only `helpline worker` processes, e.g. on a GPU host, so gateways start none.",
    )
