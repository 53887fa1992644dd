"""Limits and policies of the gateway, typed and validated (configured as ``gateway.limits`` in settings)."""

from __future__ import annotations

from helpline.platform.settings import GatewayLimits

__all__ = ["GatewayLimits"]
