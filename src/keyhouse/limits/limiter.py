"""Admit or refuse one request of a key: the monthly quota and the rate limit.

Three ways to count, chosen at start from the deployment (README, "Limits"):

* ``memory`` (one process): counters and token buckets in this process.
  Checks and updates run without an ``await`` in between, so concurrent
  requests cannot both take the last unit. Counts are added to the database
  every flush interval and on graceful shutdown; a crash loses at most one
  flush interval of counts, in the account's favour.
* ``database`` (several processes, no Redis): the monthly quota of an
  account that has one is taken in the database with one atomic
  ``UPDATE ... WHERE requests < limit``: exact across processes, one write
  per request. Rate limits hold per process. Accounts without a quota are
  counted in memory and added to the database as above.
* ``redis`` (``KEYHOUSE_REDIS_URL``): both in Redis, in one Lua script, so
  any number of processes enforce one limit. When Redis fails (timeouts
  <= 100 ms), requests go on being served, with a warning: a quota is taken
  in the database as in ``database`` mode (starting from the count Redis last
  saved there, at most one flush interval old), rate limits per process;
  Redis is tried again after a second.

A refused request consumes nothing: not quota, not a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from keyhouse.limits.plan import Period, Plan, current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.logs import get_logger

if TYPE_CHECKING:
    from keyhouse.db.engine import Database

__all__ = ["Admission", "Limiter", "Mode", "RateState"]

log = get_logger("keyhouse.limits")

Mode = Literal["memory", "database", "redis"]

# Lua runs atomically in Redis: read both, decide, then take both or nothing.
# KEYS: bucket hash (per key), usage counter (per account and month).
# ARGV: rate (0: none), bucket size, quota (-1: none), baseline (the count the
# database has, for a counter Redis lost), counter TTL in seconds.
_ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rate = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
if redis.call('EXISTS', KEYS[2]) == 0 then
  redis.call('SET', KEYS[2], ARGV[4], 'EX', ARGV[5])
end
local used = tonumber(redis.call('GET', KEYS[2]))
local tokens = size
if rate > 0 then
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  if b[1] then
    tokens = math.min(size, tonumber(b[1]) + (now - tonumber(b[2])) * rate / 1000)
  end
end
if limit >= 0 and used >= limit then
  return {1, tostring(tokens), used}
end
if rate > 0 and tokens < 1 then
  return {2, tostring(tokens), used}
end
if rate > 0 then
  tokens = tokens - 1
  redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', KEYS[1], math.ceil(size * 1000 / rate) + 1000)
end
used = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[5])
return {0, tostring(tokens), used}
"""

REDIS_TIMEOUT = 0.1  # seconds: a slow Redis must not slow every request
REDIS_RETRY_AFTER = 1.0  # seconds without trying Redis after it failed
_MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class RateState:
    """The key's token bucket after this request (RateLimit-* headers)."""

    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int | None = None  # seconds until one token, when refused


@dataclass(frozen=True, slots=True)
class Admission:
    allowed: bool
    refusal: Literal["usage", "rate"] | None
    used: int  # requests counted this period
    period: Period
    rate: RateState | None


@dataclass(slots=True)
class _Counter:
    base: int = 0  # what the database had when loaded (plus what was flushed since)
    delta: int = 0  # counted here, not yet added to the database
    loaded: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class Limiter:
    def __init__(
        self,
        db: Database,
        *,
        mode: Mode = "memory",
        redis_url: str | None = None,
        key_prefix: str = "keyhouse",
        clock: Any = time.monotonic,
    ) -> None:
        self.db = db
        self.mode: Mode = mode
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        self._counters: dict[tuple[str, str], _Counter] = {}
        self._db_rows: set[tuple[str, str]] = set()
        self._redis_touched: set[tuple[str, str]] = set()
        self._redis: Any = None
        self._script: Any = None
        self._redis_retry_at = 0.0
        self._redis_warned_at = -math.inf
        self.redis_error: str | None = None
        self._prefix = key_prefix
        if mode == "redis":
            if not redis_url:
                raise ValueError("redis mode needs a Redis URL")
            import redis.asyncio as redis_asyncio

            self._redis = redis_asyncio.Redis.from_url(
                redis_url,
                socket_timeout=REDIS_TIMEOUT,
                socket_connect_timeout=REDIS_TIMEOUT,
                retry_on_timeout=False,
            )
            self._script = self._redis.register_script(_ADMIT_LUA)

    # -- admission ------------------------------------------------------------------

    async def admit(self, account_id: str, key_id: str, plan: Plan, now: datetime) -> Admission:
        period = current_period(now)
        if self.mode == "redis":
            if self._clock() >= self._redis_retry_at:
                try:
                    return await self._admit_redis(account_id, key_id, plan, period)
                except Exception as exc:  # any Redis failure: fall back, never a 500
                    self._redis_failed(exc)
            # Without Redis, other processes may be counting too: a quota is
            # taken in the database (exact from what Redis last saved there).
            if plan.monthly_requests is not None:
                return await self._admit_database(account_id, key_id, plan, period)
            return await self._admit_memory(account_id, key_id, plan, period)
        if self.mode == "database" and plan.monthly_requests is not None:
            return await self._admit_database(account_id, key_id, plan, period)
        return await self._admit_memory(account_id, key_id, plan, period)

    async def _admit_memory(
        self, account_id: str, key_id: str, plan: Plan, period: Period
    ) -> Admission:
        counter = await self._counter(account_id, period.key)
        # No await from here on: check and take are one step for this process.
        used = counter.base + counter.delta
        limit = plan.monthly_requests
        if limit is not None and used >= limit:
            return Admission(False, "usage", used, period, self._peek(key_id, plan))
        rate = self._take_token(key_id, plan)
        if rate is not None and rate.retry_after is not None:
            return Admission(False, "rate", used, period, rate)
        counter.delta += 1
        return Admission(True, None, used + 1, period, rate)

    async def _admit_database(
        self, account_id: str, key_id: str, plan: Plan, period: Period
    ) -> Admission:
        assert plan.monthly_requests is not None
        rate = self._peek(key_id, plan)
        if rate is not None and rate.retry_after is not None:
            used = await self._db_get(account_id, period.key)
            return Admission(False, "rate", used, period, rate)
        async with self.db.session(write=True) as session:
            repo = UsageRepository(session, is_sqlite=self.db.is_sqlite)
            if (account_id, period.key) not in self._db_rows:
                await repo.ensure(account_id, period.key)
            taken = await repo.take(account_id, period.key, plan.monthly_requests)
            used = await repo.get(account_id, period.key)
        self._db_rows.add((account_id, period.key))
        if not taken:
            return Admission(False, "usage", used, period, rate)
        # Taken after the await: tokens may dip below zero under a race, which
        # only makes the next requests wait a little longer.
        return Admission(True, None, used, period, self._take_token(key_id, plan, force=True))

    async def _admit_redis(
        self, account_id: str, key_id: str, plan: Plan, period: Period
    ) -> Admission:
        # What the database had, loaded once: Redis starts from it if it lost the counter.
        baseline = (await self._counter(account_id, period.key)).base
        size = plan.bucket_size or 0
        rate_per_s = plan.rate_per_second or 0
        limit = plan.monthly_requests if plan.monthly_requests is not None else -1
        ttl = period.seconds_left(datetime.now(period.end.tzinfo)) + 35 * 86400
        async with asyncio.timeout(REDIS_TIMEOUT * 2):
            status, tokens_raw, used = await self._script(
                keys=[
                    f"{self._prefix}:bucket:{key_id}",
                    f"{self._prefix}:usage:{account_id}:{period.key}",
                ],
                args=[rate_per_s, size, limit, baseline, ttl],
            )
        self._redis_touched.add((account_id, period.key))
        if self.redis_error is not None:
            log.warning("redis_recovered")
            self.redis_error = None
        tokens = float(tokens_raw)
        rate = self._rate_state(plan, tokens, refused=int(status) == 2)
        if int(status) == 1:
            return Admission(False, "usage", int(used), period, rate)
        if int(status) == 2:
            return Admission(False, "rate", int(used), period, rate)
        return Admission(True, None, int(used), period, rate)

    def _redis_failed(self, exc: BaseException) -> None:
        now = self._clock()
        self._redis_retry_at = now + REDIS_RETRY_AFTER
        self.redis_error = type(exc).__name__
        if now - self._redis_warned_at >= 10:
            self._redis_warned_at = now
            log.warning("redis_unavailable_using_in_process_limits", error=self.redis_error)

    # -- token buckets (this process) ---------------------------------------------

    def _refill(self, key_id: str, plan: Plan) -> list[float] | None:
        size, rate = plan.bucket_size, plan.rate_per_second
        if size is None or rate is None:
            return None
        now = self._clock()
        bucket = self._buckets.get(key_id)
        if bucket is None:
            bucket = self._buckets[key_id] = [float(size), now]
        else:
            bucket[0] = min(float(size), bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
        return bucket

    def _peek(self, key_id: str, plan: Plan) -> RateState | None:
        bucket = self._refill(key_id, plan)
        if bucket is None:
            return None
        return self._rate_state(plan, bucket[0], refused=bucket[0] < 1)

    def _take_token(self, key_id: str, plan: Plan, *, force: bool = False) -> RateState | None:
        bucket = self._refill(key_id, plan)
        if bucket is None:
            return None
        if bucket[0] < 1 and not force:
            return self._rate_state(plan, bucket[0], refused=True)
        bucket[0] -= 1
        return self._rate_state(plan, bucket[0], refused=False)

    @staticmethod
    def _rate_state(plan: Plan, tokens: float, *, refused: bool) -> RateState | None:
        size, rate = plan.bucket_size, plan.rate_per_second
        if size is None or rate is None:
            return None
        reset = math.ceil(max(0.0, size - tokens) / rate)
        retry = max(1, math.ceil((1 - tokens) / rate)) if refused else None
        return RateState(size, max(0, math.floor(tokens)), reset, retry)

    # -- counters -----------------------------------------------------------------

    async def _counter(self, account_id: str, period: str) -> _Counter:
        counter = self._counters.get((account_id, period))
        if counter is None:
            counter = self._counters.setdefault((account_id, period), _Counter())
        if not counter.loaded:
            async with counter.lock:
                if not counter.loaded:
                    counter.base = await self._db_get(account_id, period)
                    counter.loaded = True
        return counter

    async def _db_get(self, account_id: str, period: str) -> int:
        async with self.db.session(write=False) as session:
            return await UsageRepository(session, is_sqlite=self.db.is_sqlite).get(
                account_id, period
            )

    async def used(self, account_id: str, now: datetime) -> tuple[int, Period]:
        """Requests counted for the account this period, as this process knows them."""
        period = current_period(now)
        key = (account_id, period.key)
        if self.mode == "redis" and self._clock() >= self._redis_retry_at:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT * 2):
                    raw = await self._redis.get(f"{self._prefix}:usage:{account_id}:{period.key}")
                if raw is not None:
                    return int(raw), period
            except Exception as exc:
                self._redis_failed(exc)
        if self.mode == "database":
            # Other processes count too: the database has the truth, plus our pending.
            counter = self._counters.get(key)
            return await self._db_get(*key) + (counter.delta if counter else 0), period
        counter = await self._counter(*key)
        return counter.base + counter.delta, period

    # -- persistence ---------------------------------------------------------------

    async def flush(self) -> None:
        """Add what was counted here to the database (and copy Redis's counts)."""
        pending = [(k, c) for k, c in self._counters.items() if c.delta]
        touched, self._redis_touched = self._redis_touched, set()
        redis_counts: list[tuple[tuple[str, str], int]] = []
        if touched and self._redis is not None:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT * 5):
                    for account_id, period in touched:
                        raw = await self._redis.get(f"{self._prefix}:usage:{account_id}:{period}")
                        if raw is not None:
                            redis_counts.append(((account_id, period), int(raw)))
            except Exception as exc:
                self._redis_failed(exc)
        if not pending and not redis_counts:
            return
        taken = {key: counter.delta for key, counter in pending}
        async with self.db.session(write=True) as session:
            repo = UsageRepository(session, is_sqlite=self.db.is_sqlite)
            for (account_id, period), delta in taken.items():
                await repo.add(account_id, period, delta)
            for (account_id, period), value in redis_counts:
                await repo.raise_to(account_id, period, value)
        for key, counter in pending:
            counter.delta -= taken[key]
            counter.base += taken[key]
        self._prune_buckets()

    def _prune_buckets(self) -> None:
        if len(self._buckets) <= _MAX_BUCKETS:
            return
        # Oldest first; a bucket untouched this long has refilled anyway.
        by_age = sorted(self._buckets.items(), key=lambda item: item[1][1])
        for key_id, _ in by_age[: len(by_age) - _MAX_BUCKETS]:
            del self._buckets[key_id]

    async def run(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush()
            except Exception as exc:
                log.warning("usage_flush_failed", error=type(exc).__name__)

    async def close(self) -> None:
        try:
            await self.flush()
        finally:
            if self._redis is not None:
                with contextlib.suppress(Exception):
                    await self._redis.aclose()

    async def health(self) -> dict[str, str]:
        """For /readyz: how limits are counted, and whether Redis answers."""
        details: dict[str, str] = {"limits": self.mode}
        if self._redis is not None:
            try:
                async with asyncio.timeout(REDIS_TIMEOUT * 2):
                    await self._redis.ping()
                details["redis"] = "ok"
            except Exception as exc:
                self._redis_failed(exc)
                details["redis"] = "unavailable: using in-process limits"
        return details
