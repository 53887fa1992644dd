"""The reliability bench's load section against a real `helpline run` (vLLM, MiniLM, Chroma), briefly."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpline.bench.reliability.harness import LiveHelpline, LiveOptions
from helpline.bench.reliability.load import run_load

pytestmark = pytest.mark.integration


def test_load_at_twice_the_cap_sheds_with_retry_after_and_serves_the_rest_whole(workspace_dir: Path) -> None:
    options = LiveOptions(concurrency_cap=1, max_tokens=16)
    with LiveHelpline(options, seed=workspace_dir / ".helpline") as live:
        assert set(live.keys) == {"customer", "staff", "engineer", "admin"}
        assert live.vllm_pid is not None and live.vllm_pid != live.gateway_pid
        result = run_load(live, seconds=4, clients=2)
    assert result["served"] > 0 and result["shed_503"] > 0  # two clients against a cap of one
    checks = result["checks"]
    assert checks["no_other_5xx"] and checks["shed_with_retry_after"] and checks["streams_end_with_done"]
    assert checks["engine_not_restarted"]
    assert result["rss"]["gateway_mb"]["before"] > 0 and result["rss"]["engine_mb"]["before"] > 0
    assert live.gateway_pid is None  # stopped on leaving the block
