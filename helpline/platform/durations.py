"""Durations as people write them: ``6h``, ``30m``, ``1h30m``, ``45s``, ``2d`` (`improve --every`, connectors)."""

from __future__ import annotations

import re

from helpline.platform.errors import ConfigError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(text: str) -> float:
    """``"6h"``, ``"30m"``, ``"1h30m"``, ``"45s"``, ``"2d"`` or plain seconds → seconds."""
    cleaned = text.strip().lower()
    parts = list(_DURATION.finditer(cleaned))
    if not cleaned or "".join(m.group(0) for m in parts).replace(" ", "") != cleaned.replace(" ", ""):
        raise ConfigError(f"{text!r} is not a duration", hint="write it like 6h, 30m, 1h30m, 45s or 2d")
    return sum(float(m.group(1)) * _SECONDS[m.group(2)] for m in parts)
