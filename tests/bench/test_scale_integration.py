"""Two real gateway replicas (`helpline run` processes on one workspace, reaching an engine by vllm.url): a key's
rate limit holds across both through a real Redis, and a replica killed with SIGKILL under load loses no
acknowledged turn while its clients, sent again to the other, are all served. The engine is `bench scale`'s
instant stand-in: what is tested is the gateways."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from helpline.bench.reliability.harness import copy_workspace
from helpline.bench.scale import Replicas, ScaleOptions, failover, instant_engine, redis_process
from helpline.evaluation.load import serve_app
from helpline.platform.workspace import Workspace
from helpline.serving.factory import gateway_db
from helpline.serving.gateway.store import GatewayStore

pytestmark = pytest.mark.integration


@pytest.fixture
def setup(workspace_dir: Path, tmp_path: Path):
    workspace = tmp_path / ".helpline"
    copy_workspace(workspace_dir / ".helpline", workspace)
    key = GatewayStore(gateway_db(Workspace.at(workspace))).create_key("customer", name="t", actor="test")[0]
    server, _, engine_url = serve_app(instant_engine("smollm2-135m-instruct"))
    try:
        yield workspace, tmp_path, key, engine_url
    finally:
        server.should_exit = True


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
def test_a_keys_rate_limit_holds_across_two_replica_processes_through_redis(setup) -> None:
    workspace, root, key, engine_url = setup
    with redis_process(root) as redis_url:
        limits = {"HELPLINE_GATEWAY__LIMITS__REQUESTS_PER_MINUTE": "60", "HELPLINE_GATEWAY__LIMITS__BURST": "4"}
        replicas = Replicas(workspace, root, engine_url=engine_url, redis_url=redis_url, settings=limits)
        try:
            urls = replicas.start(2)
            body = {"model": "helpline-support", "messages": [{"role": "user", "content": "How do I return an item?"}]}
            auth = {"Authorization": f"Bearer {key}"}
            statuses = [httpx.post(f"{urls[i % 2]}/v1/chat/completions", json=body, headers=auth, timeout=120)
                        .status_code for i in range(6)]  # fmt: skip
        finally:
            replicas.stop()
    assert statuses == [200, 200, 200, 200, 429, 429]


def test_a_replica_killed_under_load_loses_no_acknowledged_turn_and_its_clients_are_served_by_the_other(
    setup,
) -> None:
    workspace, root, key, engine_url = setup
    options = ScaleOptions(seconds=12, clients=4, max_tokens=16)
    report = failover(Replicas(workspace, root, engine_url=engine_url), workspace, key, options)
    assert report["acknowledged"] > 0 and report["acknowledged_missing_from_database"] == 0
    assert report["retried_on_other"] > 0 and report["retries_served"] == report["retried_on_other"]
    assert report["unserved_after_retry"] == 0
