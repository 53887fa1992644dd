"""Per-key rate limits and the concurrency cap held in Redis (``redis_url``), so that they hold across gateway
replicas: a key gets its rate once, not once per replica, and the engine they share gets at most
``limits.max_concurrency`` chats at once.

- The rate limit is the ``limits`` library's sliding-window counter over one window: ``burst`` requests per
  ``burst / requests_per_minute`` minutes, which allows the burst at once and the rate on average, as the
  in-process token bucket does.
- The concurrency cap is a set of leases (a sorted set scored by expiry), taken and counted in one Lua script so
  that two replicas cannot both take the last slot. A lease outlives no request: it expires after ``lease_s``, so
  slots held by a replica that was killed come back on their own.
- Redis unreachable: each replica falls back to its own in-process limit (logged once per outage), so an outage
  of Redis neither stops the gateway nor lifts its protection.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field

from helpline.platform.lazy_imports import require
from helpline.serving.gateway.limits import ConcurrencyGate, Overloaded, RateLimited, RateLimiter

log = logging.getLogger("helpline.gateway")

#: KEYS[1] the lease set; ARGV: now, lease expiry, limit, lease id. Drops expired leases, then takes one if a
#: slot is free. Returns 1 when taken.
_ACQUIRE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[2]) - tonumber(ARGV[1])) * 1000))
  return 1
end
return 0
"""


@dataclass
class _Outage:
    """Logs the first failure of an outage and the recovery, not every request in between."""

    what: str
    down: bool = False

    def failed(self, e: Exception) -> None:
        if not self.down:
            log.warning("redis unreachable for %s (%s): each replica limits on its own until it is back", self.what, e)
        self.down = True

    def ok(self) -> None:
        if self.down:
            log.warning("redis is back: %s is shared again", self.what)
        self.down = False


@dataclass
class SharedRateLimiter:
    """A key's rate across every replica that uses the same ``storage_uri`` (``redis://...``; ``memory://`` in
    one process, for tests)."""

    storage_uri: str
    per_minute: int
    burst: int
    prefix: str = "helpline"
    fallback: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        limits = require("limits", "shared")
        redis = self.storage_uri.startswith(("redis://", "rediss://"))
        options = {"key_prefix": f"{self.prefix}:rate", "socket_timeout": 1, "socket_connect_timeout": 1}
        storages, strategies = require("limits.storage", "shared"), require("limits.strategies", "shared")
        storage = storages.storage_from_string(self.storage_uri, **(options if redis else {}))
        self._limiter = strategies.SlidingWindowCounterRateLimiter(storage)
        window_s = max(1, round(self.burst * 60 / self.per_minute))
        self._item = limits.parse(f"{self.burst} per {window_s} seconds")
        self.fallback = RateLimiter(self.per_minute, self.burst)
        self._outage = _Outage("rate limits")

    def check(self, key: str) -> None:
        """Count one request of ``key`` or raise RateLimited with the wait until its window lets one through."""
        try:
            allowed = self._limiter.hit(self._item, key)
            stats = None if allowed else self._limiter.get_window_stats(self._item, key)
        except Exception as e:  # any storage failure: the replica's own bucket decides
            self._outage.failed(e)
            self.fallback.check(key)
            return
        self._outage.ok()
        if not allowed:
            raise RateLimited(max(0.0, stats.reset_time - time.time()) if stats else 1.0)


@dataclass
class SharedConcurrencyGate:
    """At most ``limit`` chats at once across the replicas sharing ``url``'s Redis. ``acquire`` returns the lease
    that ``release`` gives back."""

    url: str
    limit: int
    retry_after_s: int = 2
    lease_s: float = 600.0
    name: str = "helpline:slots"
    fallback: ConcurrencyGate = field(init=False)

    def __post_init__(self) -> None:
        redis = require("redis", "shared")
        self._redis = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self.fallback = ConcurrencyGate(self.limit, self.retry_after_s)
        self._outage = _Outage("the concurrency cap")
        self._lock = threading.Lock()

    def acquire(self) -> object:
        lease = uuid.uuid4().hex
        now = time.time()
        try:
            taken = self._acquire(keys=[self.name], args=[now, now + self.lease_s, self.limit, lease])
        except Exception as e:
            self._outage.failed(e)
            self.fallback.acquire()
            return _LOCAL
        self._outage.ok()
        if not taken:
            raise Overloaded(self.retry_after_s)
        return lease

    def release(self, lease: object = None) -> None:
        if lease is _LOCAL:
            self.fallback.release()
            return
        if lease is None:
            return
        try:
            self._redis.zrem(self.name, lease)
        except Exception as e:  # the lease expires on its own
            self._outage.failed(e)

    @property
    def active(self) -> int:
        """Slots taken now, across replicas (leases not yet expired)."""
        try:
            return int(self._redis.zcount(self.name, time.time(), "+inf"))
        except Exception:
            return self.fallback.active


#: The lease of a slot taken from the replica's own gate while Redis was unreachable.
_LOCAL = object()
