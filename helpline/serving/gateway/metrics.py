"""Prometheus metrics, in a registry per app (tests build many apps in one process)."""

from __future__ import annotations

from dataclasses import dataclass, field

from helpline.platform.lazy_imports import require


@dataclass
class Metrics:
    """The gateway's counters and histograms."""

    registry: object = field(init=False)

    def __post_init__(self) -> None:
        prom = require("prometheus_client", "serve")
        self.registry = reg = prom.CollectorRegistry()
        self.requests = prom.Counter(
            "helpline_requests_total", "HTTP requests by route and status", ["route", "status"], registry=reg
        )
        self.latency = prom.Histogram(
            "helpline_request_seconds", "End-to-end latency of chat requests", ["model"], registry=reg,
            buckets=(0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64),
        )  # fmt: skip
        self.ttft = prom.Histogram(
            "helpline_time_to_first_token_seconds", "Time to the first streamed token", ["model"], registry=reg,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16),
        )  # fmt: skip
        self.retrieval = prom.Histogram(
            "helpline_retrieval_seconds", "Retrieval and prompt building", registry=reg,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1),
        )  # fmt: skip
        self.tokens = prom.Counter("helpline_completion_tokens_total", "Tokens generated", ["model"], registry=reg)
        self.abstentions = prom.Counter("helpline_abstentions_total", "Answers that abstained", registry=reg)
        self.outcomes = prom.Counter(
            "helpline_answers_total", "Answers served, by outcome (answered, fallback, handoff, corrected)",
            ["outcome"], registry=reg,
        )  # fmt: skip
        self.rejected = prom.Counter("helpline_rejected_total", "Requests refused", ["reason"], registry=reg)
        self.engine_errors = prom.Counter("helpline_engine_errors_total", "Engine failures", registry=reg)
        self.in_flight = prom.Gauge("helpline_in_flight", "Chat requests being answered", registry=reg)

    def render(self) -> tuple[bytes, str]:
        prom = require("prometheus_client", "serve")
        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST
