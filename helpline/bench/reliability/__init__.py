"""`helpline bench reliability`: a real `helpline run` on loopback, loaded, broken and attacked (issue #25).

Sections, each run against the same live stack (``harness.py``) in this order:

- ``load`` (``load.py``): streamed chats at twice the concurrency cap; latency, what was shed, memory.
- ``faults`` (``faults.py``, ``storage.py``, ``kb_sync.py``): the engine killed and stopped, the gateway killed during
  writes, the workspace's disk full, a knowledge-base sync killed; recovery times and what was kept.
- ``fuzz`` (``fuzz.py``): schemathesis against the gateway's OpenAPI description, with each role's key.
- ``attacks`` (``attacks.py``): prompt injection and exfiltration attempts, leaks counted.

Each section reports its figures (``load`` and ``faults`` also ``passed``, when every check held); one
that raises is reported with its error and the others still run.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from helpline.bench.reliability.attacks import run_attacks
from helpline.bench.reliability.faults import SCENARIOS, run_faults
from helpline.bench.reliability.fuzz import run_fuzz
from helpline.bench.reliability.harness import LiveHelpline, LiveOptions, hang_detection_available
from helpline.bench.reliability.load import run_load
from helpline.platform.errors import ConfigError

SECTIONS = ("load", "faults", "fuzz", "attacks")


@dataclass
class ReliabilityOptions:
    """What `helpline bench reliability` runs, and under which settings."""

    sections: tuple[str, ...] = SECTIONS
    seconds: float = 45.0  # the load section's duration
    clients: int | None = None  # the load section's concurrent clients (default: twice the cap)
    faults: tuple[str, ...] = tuple(SCENARIOS)
    live: LiveOptions = field(default_factory=LiveOptions)
    seed: Path | None = None  # an initialised workspace to copy instead of running `helpline init`


def _runners(options: ReliabilityOptions) -> dict[str, Callable[[LiveHelpline], dict[str, Any]]]:
    return {
        "load": lambda live: run_load(live, seconds=options.seconds, clients=options.clients),
        "faults": lambda live: run_faults(live, scenarios=options.faults),
        "fuzz": run_fuzz,
        "attacks": run_attacks,
    }


def run_reliability(options: ReliabilityOptions | None = None) -> dict[str, Any]:
    """Start one live stack, run ``options.sections`` against it in the documented order, stop it."""
    options = options or ReliabilityOptions()
    unknown = sorted(set(options.sections) - set(SECTIONS)) + sorted(set(options.faults) - set(SCENARIOS))
    if unknown:
        raise ConfigError(
            f"unknown section or fault: {', '.join(unknown)}",
            hint=f"sections: {', '.join(SECTIONS)}; faults: {', '.join(SCENARIOS)}",
        )
    runners = _runners(options)
    result: dict[str, Any] = {
        "settings": {**asdict(options.live), "hang_detection": hang_detection_available(), "cpus": os.cpu_count()},
        "sections": [s for s in SECTIONS if s in options.sections],
    }
    with LiveHelpline(options.live, seed=options.seed) as live:
        result["startup_s"] = live.starts[0]
        for name in result["sections"]:
            started = time.perf_counter()
            try:
                result[name] = runners[name](live)
            except Exception as e:  # one broken section is reported, the others still run
                result[name] = {"error": f"{type(e).__name__}: {e}"[:2000], "passed": False}
            result[name]["section_s"] = round(time.perf_counter() - started, 1)
    # A section that gives no verdict of its own (its figures are the finding) does not count here.
    verdicts = {name: result[name]["passed"] for name in result["sections"] if "passed" in result[name]}
    result["passed"] = all(verdicts.values())
    return result
