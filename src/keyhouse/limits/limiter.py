"""Admit or refuse one request of a key (monthly quota, rate limit), and count
what was served.

Two counts, kept apart:

* **Usage**, ``usage.requests`` in the database, what platforms bill from:
  every process counts the requests it served, whatever admitted them, and
  adds its counts to the database every flush interval and on graceful
  shutdown. One transaction a batch, rows in one order (processes adding to
  the same rows wait for each other instead of deadlocking), and the batch's
  number recorded in the same transaction (``usage_flushes``): a batch that
  failed is kept and retried, and one whose commit answer was lost is found
  saved when retried, never counted twice. A request answered with a 5xx is
  given back (``refund``). Exact in every mode; a crash (not a graceful
  stop) loses what its process had not saved yet.
* **Admission**: whether the next request fits the plan. Three ways to
  count, chosen at start (README, "Limits"):

  * ``memory`` (one process): the database's count (read once) plus this
    process's; check and take without an ``await`` in between.
  * ``database`` (several processes, no Redis): a quota is taken in the
    database, one atomic ``UPDATE ... WHERE requests < limit`` a request,
    which is that request's usage too. Rate limits hold per process.
  * ``redis``: a counter per account and month, and a token bucket per key,
    in Redis, one Lua script a request (limits/redis_counters.py).

Redis faults (mode ``redis``):

* A timeout is asked again with the same operation id, so it is counted once.
* A counter Redis does not have (a new month, a restart, lost data) is made
  from the database's row, unless another process made it first, and keeps
  the row's version. Counts a process saves after that version and had
  counted in another counter (or in none) are added to it afterwards
  (``_share``): the counter is the database plus what processes have not
  saved yet. A process learns that Redis lost its data within
  ``PROBE_INTERVAL`` (the epoch key) or at its next request of the account,
  and then saves its counts at once.
* When Redis does not answer (two attempts, ~1.1 s), or not to this process,
  it counts quotas in the database, as in ``database`` mode (each such
  request counted in the row's ``fallback`` too), and rate limits in
  memory. It first saves its own counts, so the database lacks only what
  other processes admitted through Redis and have not saved yet. Any
  process that saves a row adds to its counter what the counter lacks of
  the row's ``fallback`` (``RedisCounters.sync``: idempotent), and the
  process that admitted them does too before it counts in Redis again (the
  watch probes Redis every ``PROBE_INTERVAL``). So a fault lets an account
  past its plan only by what the processes on the other side of it
  admitted and had not saved: one flush interval of their traffic. README,
  "Limits", states the bound; tests/limits/test_redis_faults.py shows it.

A refused request consumes nothing: not quota, not a token.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from keyhouse.limits.plan import Period, Plan, current_period
from keyhouse.limits.redis_counters import RedisCounters, RedisUnavailable
from keyhouse.limits.repository import Counted, UsageRepository
from keyhouse.logs import get_logger
from keyhouse.timeutil import utcnow

if TYPE_CHECKING:
    from keyhouse.db.engine import Database

__all__ = ["PROBE_INTERVAL", "Admission", "Limiter", "Mode", "RateState", "Ticket"]

log = get_logger("keyhouse.limits")

Mode = Literal["memory", "database", "redis"]
Row = tuple[str, str]  # (account_id, period)

PROBE_INTERVAL = 0.25  # seconds between two probes of Redis by the watch
# A counter lives to the end of its month and 35 days more (late reads).
_COUNTER_EXTRA_TTL = 35 * 86400
# Counts saved while a row had no counter in Redis: a process that read the
# row just before they were saved may be making the counter from that read
# (the read, then one Redis call: milliseconds); so they are kept this long
# and added to a counter made in the meantime from a row without them.
_SEED_GRACE = 10.0  # seconds
# The version of counts whose batch was found saved by an earlier attempt:
# unknown, so taken as newer than any counter (added again: the safe side).
_UNKNOWN_VERSION = 2**62
_FLUSH_MARKS_KEPT = timedelta(days=7)
_UNSHARED_KEPT = 16
_MAX_BUCKETS = 100_000


@dataclass(frozen=True, slots=True)
class RateState:
    """The key's token bucket after this request (RateLimit-* headers)."""

    limit: int
    remaining: int
    reset: int  # seconds until the bucket is full again
    retry_after: int | None = None  # seconds until one token, when refused


class Ticket(NamedTuple):
    """Where an admitted request was counted: what ``refund`` gives back.

    A NamedTuple: made on every admitted request, ~3x cheaper than a frozen
    dataclass (0.3 us against 0.9 us, timeit).
    """

    row: Row
    key_id: str
    plan: Plan
    via: Literal["memory", "database", "redis"]
    gen: str = ""  # the Redis counter it was counted in


class Admission(NamedTuple):
    """The answer for one request. A NamedTuple, as ``Ticket``: made on every one."""

    allowed: bool
    refusal: Literal["usage", "rate"] | None
    used: int  # requests counted this period
    period: Period
    rate: RateState | None
    ticket: Ticket | None = None  # None when refused


@dataclass(slots=True)
class _Batch:
    """Counts being saved; retried as they are until saved."""

    number: int
    rows: dict[Row, dict[str, int]]  # row -> {counter generation: count}


@dataclass(frozen=True, slots=True)
class _Saved:
    """Counts saved in the database that a Redis counter may lack."""

    row: Row
    version: int  # the row's version once they were saved
    gen: str  # the Redis counter they were counted in already ("": none)
    amount: int
    at: float  # when they were saved (the limiter's clock)


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
        # Names this process's batches in usage_flushes.
        self.instance = f"{os.getpid()}-{secrets.token_hex(8)}"
        # Served here, not saved yet: row -> {counter generation: count}.
        self._pending: dict[Row, dict[str, int]] = {}
        # Per row, the total of _pending and of the batch being saved.
        self._unsaved: dict[Row, int] = {}
        self._batch: _Batch | None = None
        self._batch_numbers = itertools.count(1)
        self._flush_lock = asyncio.Lock()
        self._pruned = False
        # memory mode: the database's count when first read, plus what was saved since.
        self._base: dict[Row, int] = {}
        self._db_rows: set[Row] = set()
        self._take_locks: dict[Row, asyncio.Lock] = {}
        self._gens: dict[Row, str] = {}  # the Redis counter each row was last counted in
        # Saved counts their Redis counter may lack, per row and generation:
        # at most _UNSHARED_KEPT entries each (a long outage would keep one a flush).
        self._unshared: dict[tuple[Row, str], list[_Saved]] = {}
        # Rows' fallback counts (and when seen) their Redis counters may lack.
        self._fallbacks: dict[Row, tuple[int, float]] = {}
        self._switch: asyncio.Future[None] | None = None
        self._period = ""
        self._redis: RedisCounters | None = None
        if mode == "redis":
            if not redis_url:
                raise ValueError("redis mode needs a Redis URL")
            self._redis = RedisCounters(redis_url, key_prefix)

    # -- admission ------------------------------------------------------------------

    async def admit(self, account_id: str, key_id: str, plan: Plan, now: datetime) -> Admission:
        period = current_period(now)
        row = (account_id, period.key)
        redis = self._redis
        if redis is not None:
            if redis.up:
                admission = await self._admit_redis(redis, row, key_id, plan, period, now)
                if admission is not None:
                    return admission
            if plan.monthly_requests is not None:
                # Other processes count this quota too: in the database, where
                # all of them see it, once this process's own counts are there.
                await self._switched()
                return await self._admit_database(row, key_id, plan, period)
            return await self._admit_memory(row, key_id, plan, period)
        if self.mode == "database" and plan.monthly_requests is not None:
            return await self._admit_database(row, key_id, plan, period)
        return await self._admit_memory(row, key_id, plan, period)

    async def _admit_memory(self, row: Row, key_id: str, plan: Plan, period: Period) -> Admission:
        if row not in self._base:
            await self._load_base(row)
        # No await from here on: check and take are one step for this process.
        unsaved = self._unsaved.get(row, 0)
        used = self._base[row] + unsaved
        limit = plan.monthly_requests
        if limit is not None and used >= limit:
            return Admission(False, "usage", used, period, self._peek(key_id, plan))
        rate = self._take_token(key_id, plan)
        if rate is not None and rate.retry_after is not None:
            return Admission(False, "rate", used, period, rate)
        tags = self._pending.get(row)
        if tags is None:
            self._pending[row] = {"": 1}
        else:
            tags[""] = tags.get("", 0) + 1
        self._unsaved[row] = unsaved + 1
        return Admission(True, None, used + 1, period, rate, Ticket(row, key_id, plan, "memory"))

    async def _admit_database(self, row: Row, key_id: str, plan: Plan, period: Period) -> Admission:
        assert plan.monthly_requests is not None
        rate = self._peek(key_id, plan)
        if rate is not None and rate.retry_after is not None:
            used = await self._db_get(row) + self._unsaved.get(row, 0)
            return Admission(False, "rate", used, period, rate)
        # One take of a row at a time in this process: a burst then queues
        # here, not on the row's lock in the database, where a take waiting
        # past the statement timeout would be a 503 (300 requests at once on
        # PostgreSQL gave 1-15 of them on a loaded 2-core machine).
        lock = self._take_locks.get(row)
        if lock is None:
            lock = self._take_locks[row] = asyncio.Lock()
        async with lock, self.db.session(write=True) as session:
            repo = UsageRepository(session, is_sqlite=self.db.is_sqlite)
            if row not in self._db_rows:
                await repo.ensure(*row)
            taken = await repo.take(*row, plan.monthly_requests)
            used = taken.requests if taken is not None else await repo.get(*row)
        self._db_rows.add(row)
        if taken is None:
            return Admission(False, "usage", used, period, rate)
        if self._redis is not None:
            self._note_fallback(row, taken.fallback)
        # Taken after the await: tokens may dip below zero under a race, which
        # only makes the next requests wait a little longer.
        rate = self._take_token(key_id, plan, force=True)
        return Admission(True, None, used, period, rate, Ticket(row, key_id, plan, "database"))

    async def _admit_redis(
        self, redis: RedisCounters, row: Row, key_id: str, plan: Plan, period: Period, now: datetime
    ) -> Admission | None:
        """Admitted or refused in Redis; None when Redis did not answer."""
        ttl = period.seconds_left(now) + _COUNTER_EXTRA_TTL
        limit = plan.monthly_requests if plan.monthly_requests is not None else -1
        rate_per_s, size = plan.rate_per_second or 0, plan.bucket_size or 0
        try:
            answer = await redis.admit(
                *row, key_id, rate=rate_per_s, size=size, limit=limit, ttl=ttl
            )
            if answer.status == 3:
                await self._seed(redis, row, ttl)
                answer = await redis.admit(
                    *row, key_id, rate=rate_per_s, size=size, limit=limit, ttl=ttl
                )
        except RedisUnavailable as exc:
            self._redis_failed(str(exc))
            return None
        if answer.status == 3:  # made and gone again at once: the database, this time
            return None
        seen = self._gens.get(row)
        self._gens[row] = answer.gen
        if answer.status == 0:
            self._count(row, answer.gen, 1)
        if seen is not None and seen != answer.gen:
            # The counter was made again: Redis lost the one this process
            # counted in. Save those counts now, so they are added to this one.
            await self._flush_quietly()
        rate = self._rate_state(plan, answer.tokens, refused=answer.status == 2)
        if answer.status == 1:
            return Admission(False, "usage", answer.used, period, rate)
        if answer.status == 2:
            return Admission(False, "rate", answer.used, period, rate)
        ticket = Ticket(row, key_id, plan, "redis", answer.gen)
        return Admission(True, None, answer.used, period, rate, ticket)

    async def _seed(self, redis: RedisCounters, row: Row, ttl: int) -> None:
        """Make the row's counter in Redis from the database (unless another process did)."""
        await self._flush_quietly()  # this process's counts first, so the row has them
        async with self.db.session(write=False) as session:
            counted = await UsageRepository(session, is_sqlite=self.db.is_sqlite).get_counted(*row)
        await redis.seed(*row, counted.requests, counted.version, counted.fallback, ttl)

    async def refund(self, ticket: Ticket) -> None:
        """Give back an admitted request's count and token (it was answered with a 5xx)."""
        if ticket.via == "redis" and self._redis is not None:
            # One attempt: giving back twice would let one request too many in.
            # Not given back in Redis (no answer), it stays counted there: the
            # safe side; its usage is given back all the same.
            with contextlib.suppress(RedisUnavailable):
                await self._redis.refund(
                    *ticket.row, ticket.key_id, ticket.gen, ticket.plan.bucket_size or 0
                )
            self._count(ticket.row, ticket.gen, -1)
            return
        self._count(ticket.row, "", -1)
        bucket = self._buckets.get(ticket.key_id)
        size = ticket.plan.bucket_size
        if bucket is not None and size is not None:
            bucket[0] = min(float(size), bucket[0] + 1)
        if ticket.via == "database":
            # Taken in the database, where every process reads the quota:
            # given back there now (a flush, exactly once), not in 2 s.
            await self._flush_quietly()

    def _redis_failed(self, error: str) -> None:
        redis = self._redis
        if redis is None or not redis.up:
            return
        redis.up = False
        redis.error = error
        log.warning("redis_unavailable_counting_in_database", error=error)
        # From now on this process counts quotas in the database: its own
        # counts go there first (_switched waits for this).
        self._switch = asyncio.ensure_future(self._flush_quietly())

    async def _switched(self) -> None:
        switch = self._switch
        if switch is not None and not switch.done():
            await asyncio.shield(switch)

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

    # -- counts -------------------------------------------------------------------

    def _count(self, row: Row, gen: str, n: int) -> None:
        tags = self._pending.get(row)
        if tags is None:
            tags = self._pending[row] = {}
        tags[gen] = tags.get(gen, 0) + n
        self._unsaved[row] = self._unsaved.get(row, 0) + n

    async def _load_base(self, row: Row) -> None:
        # Under the flush lock: no batch is half-saved while the row is read.
        async with self._flush_lock:
            if row not in self._base:
                self._base[row] = await self._db_get(row)

    async def _db_get(self, row: Row) -> int:
        async with self.db.session(write=False) as session:
            return await UsageRepository(session, is_sqlite=self.db.is_sqlite).get(*row)

    async def used(self, account_id: str, now: datetime) -> tuple[int, Period]:
        """Requests counted for the account this period, as this process knows them."""
        period = current_period(now)
        row = (account_id, period.key)
        redis = self._redis
        if redis is not None and redis.up:
            try:
                count = await redis.count(*row)
            except RedisUnavailable as exc:
                self._redis_failed(str(exc))
            else:
                if count is not None:
                    return count, period
        if self.mode == "memory":
            if row not in self._base:
                await self._load_base(row)
            return self._base[row] + self._unsaved.get(row, 0), period
        # Other processes count too: the database, plus what is ours and not there yet.
        return await self._db_get(row) + self._unsaved.get(row, 0), period

    # -- persistence ---------------------------------------------------------------

    async def flush(self) -> None:
        """Save what was counted here to the database, then add to Redis what it lacks.

        Raises if the database fails; the batch is then kept and saved by the
        next flush (exactly once: ``UsageRepository.claim_flush``).
        """
        async with self._flush_lock:
            self._forget_old_periods()
            for _ in range(2):  # a batch a failed flush kept, then the new counts
                batch = self._batch
                if batch is None:
                    rows = {row: tags for row, tags in self._pending.items() if any(tags.values())}
                    self._pending = {}
                    if not rows:
                        break
                    batch = self._batch = _Batch(next(self._batch_numbers), rows)
                versions = await self._save(batch)
                self._batch = None
                self._saved(batch, versions)
        self._prune_buckets()
        redis = self._redis
        if redis is not None and redis.up and (self._unshared or self._fallbacks):
            try:
                await self._share(redis)
            except RedisUnavailable as exc:
                self._redis_failed(str(exc))

    async def _save(self, batch: _Batch) -> dict[Row, Counted] | None:
        """One transaction: the batch's mark and its counts. None: saved before."""
        now = utcnow()
        async with self.db.session(write=True) as session:
            repo = UsageRepository(session, is_sqlite=self.db.is_sqlite)
            if not await repo.claim_flush(self.instance, batch.number, now):
                return None  # an earlier attempt committed; its answer was lost
            if not self._pruned:
                await repo.prune_flushes(now - _FLUSH_MARKS_KEPT)
            counted = await repo.add_many(
                (account_id, period, sum(tags.values()))
                for (account_id, period), tags in batch.rows.items()
            )
        self._pruned = True
        return counted

    def _saved(self, batch: _Batch, counted: dict[Row, Counted] | None) -> None:
        at = self._clock()
        for row, tags in batch.rows.items():
            total = sum(tags.values())
            left = self._unsaved.get(row, 0) - total
            if left:
                self._unsaved[row] = left
            else:
                self._unsaved.pop(row, None)
            if row in self._base:
                self._base[row] += total
            if self._redis is None:
                continue
            version = _UNKNOWN_VERSION if counted is None else counted[row].version
            for gen, amount in tags.items():
                if amount:
                    self._unshare(_Saved(row, version, gen, amount, at))
            if counted is not None and counted[row].fallback:
                # Others may have admitted some in the database (Redis out of
                # their reach): this process's counter gets them now.
                self._note_fallback(row, counted[row].fallback)

    def _unshare(self, entry: _Saved) -> None:
        """Keep ``entry`` for ``_share``; past _UNSHARED_KEPT, the two newest merge.

        A merged entry takes the later version: if a counter was made from
        the row between the two saves, both are added (the first twice), the
        safe side. Entries pile up only while Redis is out of reach (each
        share settles them), so only an outage of more than _UNSHARED_KEPT
        flushes followed by lost data can count anything twice.
        """
        kept = self._unshared.setdefault((entry.row, entry.gen), [])
        kept.append(entry)
        if len(kept) > _UNSHARED_KEPT:
            newer, older = kept.pop(), kept.pop()
            kept.append(
                _Saved(
                    entry.row,
                    max(older.version, newer.version),
                    entry.gen,
                    older.amount + newer.amount,
                    newer.at,
                )
            )

    def _note_fallback(self, row: Row, fallback: int) -> None:
        known = self._fallbacks.get(row)
        if known is None or known[0] < fallback:
            self._fallbacks[row] = (fallback, self._clock())

    async def _share(self, redis: RedisCounters) -> None:
        """Add to Redis's counters the saved counts they lack.

        Requests admitted in the database while Redis was unreachable: what a
        counter lacks of its row's ``fallback`` count (``RedisCounters.sync``,
        any process may do it, for all of them). Saved counts: in a counter
        if they were counted in it (its generation) or saved before it was
        made from the row (its version). With no counter, the next one is
        made from the database, which has them all. Raises RedisUnavailable,
        keeping what is not done.
        """
        if self._fallbacks:
            fallbacks = {row: f for row, (f, _) in self._fallbacks.items()}
            missing = await redis.sync(fallbacks)
            now = self._clock()
            for row, fallback in fallbacks.items():
                current = self._fallbacks.get(row)
                if current is None or current[0] > fallback:
                    continue  # more came meanwhile: synced next time
                if row not in missing or now - current[1] >= _SEED_GRACE:
                    del self._fallbacks[row]
        entries = [entry for kept in self._unshared.values() for entry in kept]
        self._unshared = {}
        if not entries:
            return
        try:
            states = await redis.states(sorted({entry.row for entry in entries}))
        except RedisUnavailable:
            for entry in entries:
                self._unshare(entry)
            raise
        now = self._clock()
        kept: list[_Saved] = []
        lacking: dict[tuple[Row, str], list[_Saved]] = {}
        for entry in entries:
            state = states.get(entry.row)
            if state is None:
                if now - entry.at < _SEED_GRACE:
                    kept.append(entry)
            elif entry.gen != state.gen and entry.version > state.version:
                lacking.setdefault((entry.row, state.gen), []).append(entry)
        todo = list(lacking.items())
        try:
            while todo:
                (row, gen), lacked = todo[0]
                amount = sum(entry.amount for entry in lacked)
                if amount and not await redis.share(*row, gen, amount):
                    kept.extend(lacked)  # made again meanwhile: judged again next time
                todo.pop(0)
        finally:
            kept.extend(entry for _, lacked in todo for entry in lacked)
            for entry in kept:
                self._unshare(entry)

    async def _flush_quietly(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            log.warning("usage_flush_failed", error=type(exc).__name__)

    def _forget_old_periods(self) -> None:
        period = current_period(utcnow()).key
        if period == self._period:
            return
        self._period = period
        self._base = {row: n for row, n in self._base.items() if row[1] == period}
        self._gens = {row: g for row, g in self._gens.items() if row[1] == period}
        self._db_rows = {row for row in self._db_rows if row[1] == period}
        self._take_locks = {row: k for row, k in self._take_locks.items() if row[1] == period}
        self._fallbacks = {row: f for row, f in self._fallbacks.items() if row[1] == period}

    def _prune_buckets(self) -> None:
        if len(self._buckets) <= _MAX_BUCKETS:
            return
        # Oldest first; a bucket untouched this long has refilled anyway.
        by_age = sorted(self._buckets.items(), key=lambda item: item[1][1])
        for key_id, _ in by_age[: len(by_age) - _MAX_BUCKETS]:
            del self._buckets[key_id]

    # -- background ------------------------------------------------------------------

    async def run(self, interval: float) -> None:
        """Save counts every ``interval`` seconds; with Redis, watch it too."""
        loops = [self._flush_every(interval)]
        if self._redis is not None:
            loops.append(self._watch(self._redis))
        await asyncio.gather(*loops)

    async def _flush_every(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            await self._flush_quietly()

    async def _watch(self, redis: RedisCounters) -> None:
        """Probe Redis every PROBE_INTERVAL: see it fail, lose its data, come back."""
        epoch: str | None = None
        while True:
            await asyncio.sleep(PROBE_INTERVAL)
            try:
                current = await redis.epoch()
            except RedisUnavailable as exc:
                self._redis_failed(str(exc))
                continue
            if epoch is not None and current != epoch:
                # Redis lost its data: save this process's counts now; _share
                # adds them to the counters made since.
                log.warning("redis_lost_its_data")
                await self._flush_quietly()
            epoch = current
            if redis.up:
                continue
            try:
                await self._share(redis)
            except RedisUnavailable:
                continue
            redis.up, redis.error = True, None
            log.warning("redis_recovered")
            # Requests admitted in the database that finished meanwhile.
            with contextlib.suppress(RedisUnavailable):
                await self._share(redis)

    async def close(self) -> None:
        try:
            await self._switched()
            await self.flush()
        finally:
            if self._redis is not None:
                await self._redis.close()

    async def health(self) -> dict[str, str]:
        """For /readyz: how limits are counted, and whether Redis is counting them."""
        details: dict[str, str] = {"limits": self.mode}
        if self._redis is not None:
            details["redis"] = (
                "ok" if self._redis.up else "unavailable: quotas counted in the database"
            )
        return details
