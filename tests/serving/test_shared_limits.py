"""Rate limits and the concurrency cap shared by gateway replicas through a real Redis (Debian's redis-server,
started per test module; the tests skip where it is not installed: `apt-get install redis-server`)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpline.platform.settings import GatewayLimits, Settings
from helpline.serving.gateway.limits import Overloaded, RateLimited

pytest.importorskip("limits")
pytest.importorskip("redis")


class RedisServer:
    def __init__(self, folder: Path) -> None:
        from helpline.evaluation.load import free_port

        self.port = free_port()
        self.folder = folder
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import redis

        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.folder)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def admission(url: str, **limits: float):
    from helpline.serving.factory import build_admission

    return build_admission(Settings(redis_url=url), limits=GatewayLimits(**limits))


def test_a_keys_rate_holds_across_two_replicas_not_once_per_replica(redis_server: RedisServer, tmp_path: Path) -> None:
    from helpline.testing.serving import make_gateway, make_replica

    limits = GatewayLimits(requests_per_minute=60, burst=4)
    a = make_gateway(tmp_path, limits, admission=admission(redis_server.url, requests_per_minute=60, burst=4))
    b = make_replica(a, limits, admission=admission(redis_server.url, requests_per_minute=60, burst=4))
    statuses = [(a if i % 2 else b).chat("customer", "How do I return an item?").status_code for i in range(6)]
    assert statuses == [200, 200, 200, 200, 429, 429]  # the burst of 4, across both, then refused on both
    refused = b.chat("customer", "How do I return an item?")
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert a.chat("staff", "How do I return an item?").status_code == 200  # another key has its own rate

    own = make_replica(a, limits)  # the same pair without Redis: each replica would give the key its burst again
    assert own.chat("customer", "How do I return an item?").status_code == 200


def test_the_concurrency_cap_holds_across_replicas_and_frees_on_release(redis_server: RedisServer) -> None:
    first, second = (admission(redis_server.url, max_concurrency=2).gate for _ in range(2))
    leases = [first.acquire(), second.acquire()]
    with pytest.raises(Overloaded):
        first.acquire()
    with pytest.raises(Overloaded):
        second.acquire()
    assert first.active == 2
    second.release(leases[0])  # a slot taken by one replica may be given back by either: it is the lease
    assert first.acquire() is not None


def test_slots_held_by_a_killed_replica_come_back_when_their_leases_expire(redis_server: RedisServer) -> None:
    from helpline.serving.gateway.shared_limits import SharedConcurrencyGate

    killed = SharedConcurrencyGate(redis_server.url, limit=1, lease_s=0.5)
    killed.acquire()  # and never released: the replica died mid-chat
    survivor = SharedConcurrencyGate(redis_server.url, limit=1, lease_s=0.5)
    with pytest.raises(Overloaded):
        survivor.acquire()
    time.sleep(0.6)
    assert survivor.acquire() is not None


def test_without_redis_each_replica_still_limits_on_its_own_and_shares_again_once_it_is_back(
    redis_server: RedisServer,
) -> None:
    shared = admission(redis_server.url, requests_per_minute=60, burst=2, max_concurrency=1)
    redis_server.stop()
    shared.rate.check("k")
    shared.rate.check("k")
    with pytest.raises(RateLimited):  # the replica's own bucket
        shared.rate.check("k")
    lease = shared.gate.acquire()
    with pytest.raises(Overloaded):  # the replica's own cap
        shared.gate.acquire()
    shared.gate.release(lease)

    redis_server.start()  # empty: the shared counts start again
    other = admission(redis_server.url, requests_per_minute=60, burst=2, max_concurrency=1)
    shared.rate.check("k2")
    other.rate.check("k2")
    with pytest.raises(RateLimited):
        shared.rate.check("k2")
    held = other.gate.acquire()
    with pytest.raises(Overloaded):
        shared.gate.acquire()
    other.gate.release(held)


def test_redis_url_must_be_a_redis_address_and_without_it_each_gateway_limits_on_its_own() -> None:
    from helpline.platform.errors import ConfigError
    from helpline.platform.settings import load_settings
    from helpline.serving.factory import build_admission

    with pytest.raises(ConfigError, match="not a Redis address"):
        load_settings(redis_url="http://redis:6379")
    assert build_admission(Settings(), limits=GatewayLimits()) is None
