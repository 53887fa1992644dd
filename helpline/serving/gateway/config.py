"""Limits and policies of the gateway, typed and validated."""

from __future__ import annotations

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
    requests_per_minute: int = Field(120, ge=1, description="Per-key rate limit (token bucket; 429 above).")
    burst: int = Field(30, ge=1, description="Requests a key may make at once before the rate applies.")
    max_concurrency: int = Field(64, ge=1, description="Chat requests generating at once (503 above).")
    upstream_timeout_s: float = Field(120.0, gt=0, description="Longest wait for the engine before 504.")
    retry_after_s: int = Field(2, ge=1, description="Retry-After sent with 503 under overload.")

    @model_validator(mode="after")
    def _burst_within_rate(self) -> GatewayLimits:
        if self.burst > self.requests_per_minute:
            raise ValueError(f"burst ({self.burst}) must not exceed requests_per_minute ({self.requests_per_minute})")
        return self
