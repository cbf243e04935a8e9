"""The Redis side of the limits: one admission counter per account and month, one
token bucket per key, each changed by one Lua script (atomic in Redis).

A counter is a hash ``{n, gen, sv, fb}``: ``n`` the requests admitted,
``gen`` a random name given when the counter was made, ``sv`` the version
of the database's usage row it was made from, ``fb`` how many of the row's
``fallback`` requests (admitted in the database while Redis was unreachable)
``n`` includes. limits/limiter.py explains how these keep the count exact.
Counters live under ``admitted:`` (the string counters of keyhouse before
them, under ``usage:``, are left to expire).

Timeouts: a command gets ``FIRST_TIMEOUT`` (100 ms), so a slow Redis does not
slow every request. A timeout is ambiguous (the script may have run and its
answer been late, which an event loop busy for 100 ms on a loaded machine
is enough for), so the same operation is asked once more with
``RETRY_TIMEOUT``: every admission leaves its answer under its operation id
for ``MEMO_TTL_MS``, and the second attempt returns that answer instead of
counting again. redis-py's own retries are off: they would count twice.
So a stall shorter than about a second is waited out and counted exactly;
a longer one is an outage (limits/limiter.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from dataclasses import dataclass
from typing import Any

__all__ = [
    "FIRST_TIMEOUT",
    "RETRY_TIMEOUT",
    "Answer",
    "CounterState",
    "RedisCounters",
    "RedisUnavailable",
]

FIRST_TIMEOUT = 0.1  # seconds
RETRY_TIMEOUT = 1.0  # seconds: the second attempt of an operation, and the watch's probe
MEMO_TTL_MS = 10_000
EPOCH_TTL = 86_400  # seconds; refreshed by every probe

# KEYS: bucket (per key), counter (per account and month), memo (per operation).
# ARGV: rate (0: none), bucket size, quota (-1: none), counter TTL (s), memo TTL (ms).
# Answers "status tokens used gen"; status 0 admitted, 1 over quota, 2 over
# rate, 3 no counter (nothing done: the caller makes it and asks again).
_ADMIT = """
local memo = redis.call('GET', KEYS[3])
if memo then return memo end
local c = redis.call('HMGET', KEYS[2], 'n', 'gen')
if not c[1] then return '3' end
local used = tonumber(c[1])
local rate = tonumber(ARGV[1])
local size = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local tokens = size
local now = 0
if rate > 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
  if b[1] then
    tokens = math.min(size, tonumber(b[1]) + (now - tonumber(b[2])) * rate / 1000)
  end
end
local status = 0
if limit >= 0 and used >= limit then
  status = 1
elseif rate > 0 and tokens < 1 then
  status = 2
else
  if rate > 0 then
    tokens = tokens - 1
    redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', now)
    redis.call('PEXPIRE', KEYS[1], math.ceil(size * 1000 / rate) + 1000)
  end
  used = redis.call('HINCRBY', KEYS[2], 'n', 1)
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
local answer = status .. ' ' .. tostring(tokens) .. ' ' .. used .. ' ' .. c[2]
if status == 0 then
  redis.call('SET', KEYS[3], answer, 'PX', ARGV[5])
end
return answer
"""

# KEYS: counter. ARGV: n, gen, sv, fb, TTL. Makes the counter unless one exists.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('HSET', KEYS[1], 'n', ARGV[1], 'gen', ARGV[2], 'sv', ARGV[3], 'fb', ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
end
return 1
"""

# KEYS: counter. ARGV: the row's fallback count. Adds what the counter lacks
# of it (idempotent: fb only rises). 0: no counter.
_SYNC = """
local fb = redis.call('HGET', KEYS[1], 'fb')
if not fb then return 0 end
local missing = tonumber(ARGV[1]) - tonumber(fb)
if missing > 0 then
  redis.call('HINCRBY', KEYS[1], 'n', missing)
  redis.call('HSET', KEYS[1], 'fb', ARGV[1])
end
return 1
"""

# KEYS: counter, memo. ARGV: gen, amount, memo TTL (ms). Adds to the counter
# if it is still generation ``gen`` (0: it is not); once per memo.
_SHARE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 1 end
if redis.call('HGET', KEYS[1], 'gen') ~= ARGV[1] then return 0 end
redis.call('HINCRBY', KEYS[1], 'n', ARGV[2])
redis.call('SET', KEYS[2], '1', 'PX', ARGV[3])
return 1
"""

# KEYS: bucket, counter. ARGV: gen, bucket size. Gives back one request
# (if the counter is still ``gen``) and one token.
_REFUND = """
if redis.call('HGET', KEYS[2], 'gen') == ARGV[1] then
  redis.call('HINCRBY', KEYS[2], 'n', -1)
end
local b = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
if b[1] then
  redis.call('HSET', KEYS[1], 'tokens', tostring(math.min(tonumber(ARGV[2]), tonumber(b[1]) + 1)))
end
return 1
"""

# KEYS: epoch. ARGV: a new epoch, TTL. The epoch in force (set if missing).
_EPOCH = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return ARGV[1]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return v
"""


class RedisUnavailable(Exception):
    """Redis did not answer (both attempts), or answered with an error."""


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0 admitted, 1 over quota, 2 over rate, 3 no counter
    tokens: float
    used: int
    gen: str


@dataclass(frozen=True, slots=True)
class CounterState:
    gen: str
    version: int  # of the usage row the counter was made from


class RedisCounters:
    """Counters and buckets in Redis, each operation atomic and counted at most once."""

    def __init__(self, url: str, prefix: str) -> None:
        # Imported here: redis-py takes ~160 ms to import (python -X importtime),
        # paid only by deployments that use it.
        import redis
        import redis.asyncio as redis_asyncio
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._timeouts: tuple[type[BaseException], ...] = (redis.TimeoutError, TimeoutError)

        def client(timeout: float) -> Any:
            return redis_asyncio.Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # redis-py retries a timed-out command by default: a script
                # that ran would count twice. Ours are retried by _call, once,
                # with the same operation id.
                retry=Retry(NoBackoff(), 0),
            )

        self._fast = client(FIRST_TIMEOUT)
        self._patient = client(RETRY_TIMEOUT)
        self._admit = self._fast.register_script(_ADMIT)
        self._seed = self._fast.register_script(_SEED)
        self._share = self._fast.register_script(_SHARE)
        self._sync = self._fast.register_script(_SYNC)
        self._refund = self._fast.register_script(_REFUND)
        self._epoch = self._fast.register_script(_EPOCH)
        self.prefix = prefix
        self._op_prefix = f"{prefix}:op:{secrets.token_hex(6)}:"
        self._ops = itertools.count()
        # Whether requests are counted here now; the limiter's watch keeps it.
        self.up = True
        self.error: str | None = None

    def counter_key(self, account_id: str, period: str) -> str:
        return f"{self.prefix}:admitted:{account_id}:{period}"

    def bucket_key(self, key_id: str) -> str:
        return f"{self.prefix}:bucket:{key_id}"

    def _op(self) -> str:
        return f"{self._op_prefix}{next(self._ops)}"

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run ``script`` (ours are idempotent: asking again is safe)."""
        # The first attempt inline (_run's, without its closure and list): every request pays it.
        try:
            async with asyncio.timeout(FIRST_TIMEOUT * 2):
                return await script(keys=keys, args=args)
        except self._errors:
            pass
        return await self._run(
            lambda client: script(keys=keys, args=args, client=client), fast=False
        )

    async def _run(self, command: Any, *, fast: bool = True) -> Any:
        """``command(client)``: with the fast client, then the patient one.

        A connection Redis closed (a restart) fails its next command even
        though it was pooled; redis-py then drops it, so a connection error
        on the patient client is tried once more, on a new connection. A
        patient timeout is not: Redis is not answering.
        """
        attempts = [self._fast] if fast else []
        attempts += [self._patient, self._patient]
        failure: BaseException | None = None
        for client in attempts:
            timeout = FIRST_TIMEOUT if client is self._fast else RETRY_TIMEOUT
            # asyncio.timeout: a guard over redis-py's socket timeouts (its
            # TimeoutError is an OSError); a command it cancels closes its connection.
            try:
                async with asyncio.timeout(timeout * 2):
                    return await command(client)
            except self._errors as exc:
                failure = exc
                if client is self._patient and isinstance(exc, self._timeouts):
                    break
        raise RedisUnavailable(type(failure).__name__)

    async def _once(self, command: Any) -> Any:
        """``command(client)`` once, with the patient client (not idempotent)."""
        try:
            async with asyncio.timeout(RETRY_TIMEOUT * 2):
                return await command(self._patient)
        except self._errors as exc:
            raise RedisUnavailable(type(exc).__name__) from None

    async def admit(
        self,
        account_id: str,
        period: str,
        key_id: str,
        *,
        rate: int,
        size: int,
        limit: int,
        ttl: int,
    ) -> Answer:
        raw = await self._call(
            self._admit,
            [self.bucket_key(key_id), self.counter_key(account_id, period), self._op()],
            [rate, size, limit, ttl, MEMO_TTL_MS],
        )
        parts = (raw.decode() if isinstance(raw, bytes) else str(raw)).split(" ")
        if parts[0] == "3":
            return Answer(3, float(size), 0, "")
        return Answer(int(parts[0]), float(parts[1]), int(parts[2]), parts[3])

    async def seed(
        self, account_id: str, period: str, requests: int, version: int, fallback: int, ttl: int
    ) -> None:
        """Make the counter from the row's counts (at ``version``), unless it exists."""
        gen = secrets.token_hex(6)
        await self._call(
            self._seed,
            [self.counter_key(account_id, period)],
            [requests, gen, version, fallback, ttl],
        )

    async def sync(self, fallbacks: dict[tuple[str, str], int]) -> set[tuple[str, str]]:
        """Add to each row's counter what it lacks of the row's fallback count.

        One round trip; the rows without a counter (the next one is made from
        the database, which has them).
        """
        rows = list(fallbacks)

        async def run(client: Any) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for row in rows:
                    await self._sync(
                        keys=[self.counter_key(*row)], args=[fallbacks[row]], client=pipe
                    )
                answers: list[Any] = await pipe.execute()
                return answers

        answers = await self._run(run, fast=False)
        return {row for row, done in zip(rows, answers, strict=True) if int(done) == 0}

    async def states(self, rows: list[tuple[str, str]]) -> dict[tuple[str, str], CounterState]:
        """The generation and seed version of each row's counter (missing rows: none)."""

        async def read(client: Any) -> list[Any]:
            async with client.pipeline(transaction=False) as pipe:
                for account_id, period in rows:
                    pipe.hmget(self.counter_key(account_id, period), "gen", "sv")
                answers: list[Any] = await pipe.execute()
                return answers

        answers = await self._run(read, fast=False)
        states: dict[tuple[str, str], CounterState] = {}
        for row, (gen, sv) in zip(rows, answers, strict=True):
            if gen is not None and sv is not None:
                states[row] = CounterState(gen.decode(), int(sv))
        return states

    async def share(self, account_id: str, period: str, gen: str, amount: int) -> bool:
        """Add ``amount`` to the counter if it is still ``gen``; False if it is not."""
        done = await self._call(
            self._share,
            [self.counter_key(account_id, period), self._op()],
            [gen, amount, MEMO_TTL_MS],
        )
        return int(done) == 1

    async def refund(self, account_id: str, period: str, key_id: str, gen: str, size: int) -> None:
        """Give back one request and one token. One attempt: not idempotent."""
        keys = [self.bucket_key(key_id), self.counter_key(account_id, period)]
        await self._once(lambda client: self._refund(keys=keys, args=[gen, size], client=client))

    async def count(self, account_id: str, period: str) -> int | None:
        key = self.counter_key(account_id, period)
        raw = await self._run(lambda client: client.hget(key, "n"))
        return None if raw is None else int(raw)

    async def epoch(self) -> str:
        """Redis's epoch: a name set when its data began (a restart that lost it sets a new one)."""
        raw = await self._run(
            lambda client: self._epoch(
                keys=[f"{self.prefix}:epoch"], args=[secrets.token_hex(6), EPOCH_TTL], client=client
            ),
            fast=False,
        )
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    async def close(self) -> None:
        for client in (self._fast, self._patient):
            with contextlib.suppress(Exception):
                await client.aclose()
