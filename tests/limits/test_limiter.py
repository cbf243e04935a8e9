"""The limiter's counts: saved exactly once, kept through faults, exact in Redis.

Several ``Limiter``s on one database stand for several processes; their
flushes race for real on PostgreSQL. Redis faults use a private
``redis-server`` (``private_redis``): paused, stopped and started again.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.limits.limiter import Limiter, Mode, _Batch
from keyhouse.limits.plan import Plan, current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import bare_account
from tests.limits.conftest import PrivateRedis
from tests.limits.helpers import until
from tests.proxy import tcp_proxy

PERIOD = current_period(utcnow()).key


async def stored(db: Database, account_id: str, period: str = PERIOD) -> int:
    async with db.session(write=False) as session:
        return await UsageRepository(session, is_sqlite=db.is_sqlite).get(account_id, period)


async def admitted(limiter: Limiter, account_id: str, plan: Plan, count: int) -> int:
    """Ask ``count`` times; how many were admitted."""
    answers = [await limiter.admit(account_id, "key_x", plan, utcnow()) for _ in range(count)]
    return sum(a.allowed for a in answers)


@pytest.fixture
async def limiters(runtime: Runtime) -> AsyncIterator[Callable[..., Limiter]]:
    """Limiters on the test's database (each one a process), closed at the end."""
    made: list[Limiter] = []

    def make(mode: Mode = "memory", redis_url: str | None = None) -> Limiter:
        limiter = Limiter(runtime.db, mode=mode, redis_url=redis_url)
        made.append(limiter)
        return limiter

    yield make
    for limiter in made:
        await limiter.close()


class TestFlush:
    async def test_a_batch_whose_commit_answer_was_lost_is_saved_once(
        self, runtime: Runtime, limiters: Callable[..., Limiter]
    ) -> None:
        limiter = limiters()
        account_id = await bare_account(runtime)
        assert await admitted(limiter, account_id, Plan(), 5) == 5
        await limiter.flush()
        # The retry of a batch whose commit went through but whose answer did
        # not: the same batch, sent again.
        limiter._batch = _Batch(1, {(account_id, PERIOD): {"": 5}})
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 5
        assert await admitted(limiter, account_id, Plan(), 2) == 2
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 7

    @pytest.mark.postgresql_only
    async def test_a_flush_whose_database_is_down_keeps_its_counts(
        self, runtime: Runtime, settings: Settings
    ) -> None:
        account_id = await bare_account(runtime)
        assert settings.database_url is not None
        url = make_url(settings.database_url)
        assert url.host is not None
        assert url.port is not None
        async with tcp_proxy(url.host, url.port) as proxy:
            proxied = url.set(host="127.0.0.1", port=proxy.port)
            db = Database(
                settings.model_copy(
                    update={"database_url": proxied.render_as_string(hide_password=False)}
                )
            )
            limiter = Limiter(db)
            plan = Plan(monthly_requests=10)
            try:
                assert await admitted(limiter, account_id, plan, 4) == 4
                proxy.cut()
                with pytest.raises((SQLAlchemyError, OSError)):
                    await limiter.flush()
                # Kept: still counted against the plan, and saved later, once.
                assert (await limiter.used(account_id, utcnow()))[0] == 4
                await proxy.start()
                assert await admitted(limiter, account_id, plan, 1) == 1
                await limiter.flush()
                await limiter.flush()
            finally:
                await limiter.close()
                await db.dispose()
        assert await stored(runtime.db, account_id) == 5

    @pytest.mark.postgresql_only
    async def test_concurrent_flushes_of_many_processes_never_deadlock(
        self, runtime: Runtime, limiters: Callable[..., Limiter]
    ) -> None:
        # Six processes add to the same 240 rows at once, each in an order of
        # its own: rows written in arbitrary order deadlock here within a few
        # rounds ("deadlock detected"); in one order, they wait in turn.
        accounts = [await bare_account(runtime) for _ in range(40)]
        rows = [(a, f"2026-{m:02d}") for a in accounts for m in range(1, 7)]
        processes = [limiters() for _ in range(6)]
        rng = random.Random(12)
        for _ in range(8):
            for limiter in processes:
                for row in rng.sample(rows, len(rows)):
                    limiter._count(row, "", 1)
            results = await asyncio.gather(
                *(limiter.flush() for limiter in processes), return_exceptions=True
            )
            assert [r for r in results if r is not None] == []
        assert {await stored(runtime.db, *row) for row in rows} == {6 * 8}


class TestRefund:
    @pytest.mark.parametrize("mode", ["memory", "database"])
    async def test_gives_back_the_count_and_the_token(
        self, runtime: Runtime, limiters: Callable[..., Limiter], mode: Mode
    ) -> None:
        limiter = limiters(mode)
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=2, rate_per_second=1, burst=2)
        first = await limiter.admit(account_id, "key_x", plan, utcnow())
        assert first.ticket is not None
        assert first.rate is not None
        assert (first.used, first.rate.remaining) == (1, 1)
        await limiter.refund(first.ticket)
        again = await limiter.admit(account_id, "key_x", plan, utcnow())
        assert again.rate is not None
        assert (again.allowed, again.used, again.rate.remaining) == (True, 1, 1)
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 1


class TestRedis:
    async def test_a_timed_out_admission_asked_again_counts_once(
        self,
        runtime: Runtime,
        limiters: Callable[..., Limiter],
        private_redis: PrivateRedis,
    ) -> None:
        limiter = limiters("redis", private_redis.url)
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=100)
        assert await admitted(limiter, account_id, plan, 1) == 1
        # Longer than the first attempt's 100 ms, shorter than the second's.
        private_redis.pause(400)
        answers = await asyncio.gather(
            *(limiter.admit(account_id, "key_x", plan, utcnow()) for _ in range(20))
        )
        assert all(a.allowed and a.ticket and a.ticket.via == "redis" for a in answers)
        counter = private_redis.client().hget(f"keyhouse:admitted:{account_id}:{PERIOD}", "n")
        assert counter == b"21"
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 21

    async def test_a_lost_counter_is_rebuilt_with_every_process_count(
        self,
        runtime: Runtime,
        limiters: Callable[..., Limiter],
        private_redis: PrivateRedis,
    ) -> None:
        one, two = limiters("redis", private_redis.url), limiters("redis", private_redis.url)
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=10)
        assert await admitted(one, account_id, plan, 3) == 3
        assert await admitted(two, account_id, plan, 3) == 3
        await one.flush()  # one saved its counts; two has not
        private_redis.restart_empty()
        # Rebuilt from the database (3), then two's unsaved 3 added when it
        # finds the new counter: 10 in all, never more.
        got = [await admitted(p, account_id, plan, 1) for p in (one, two, one, two) * 3]
        assert sum(got) == 10 - 6
        await one.flush()
        await two.flush()
        assert await stored(runtime.db, account_id) == 10

    async def test_admissions_made_in_the_database_are_added_back(
        self,
        runtime: Runtime,
        limiters: Callable[..., Limiter],
        private_redis: PrivateRedis,
    ) -> None:
        limiter = limiters("redis", private_redis.url)
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=10)
        watch = asyncio.create_task(limiter.run(3600))
        try:
            assert await admitted(limiter, account_id, plan, 4) == 4
            private_redis.pause(2500)
            # Redis does not answer: counted in the database (4 saved first).
            assert await admitted(limiter, account_id, plan, 3) == 3
            assert (await limiter.health())["redis"].startswith("unavailable")

            async def back() -> bool:
                return (await limiter.health())["redis"] == "ok"

            await until(back, "the limiter counts in Redis again")
            counter = private_redis.client().hget(f"keyhouse:admitted:{account_id}:{PERIOD}", "n")
            assert counter == b"7"
            assert await admitted(limiter, account_id, plan, 5) == 3
        finally:
            watch.cancel()
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 10

    async def test_what_a_process_cut_off_admits_reaches_the_others_at_their_flush(
        self,
        runtime: Runtime,
        limiters: Callable[..., Limiter],
        private_redis: PrivateRedis,
    ) -> None:
        # Only one process loses Redis (a network partition): it counts in
        # the database, and the others add that to Redis's count when they save.
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=10)
        key = f"keyhouse:admitted:{account_id}:{PERIOD}"
        async with tcp_proxy("127.0.0.1", private_redis.port) as proxy:
            cut_off = limiters("redis", f"redis://127.0.0.1:{proxy.port}/0")
            other = limiters("redis", private_redis.url)
            assert await admitted(other, account_id, plan, 2) == 2
            await other.flush()
            proxy.cut()
            assert await admitted(cut_off, account_id, plan, 3) == 3
            assert (await cut_off.health())["redis"].startswith("unavailable")
            assert await admitted(other, account_id, plan, 1) == 1
            await other.flush()
            assert private_redis.client().hget(key, "n") == b"6"
            await other.flush()  # once only
            assert private_redis.client().hget(key, "n") == b"6"
            assert await admitted(other, account_id, plan, 6) == 4
        await other.flush()
        await cut_off.flush()
        assert await stored(runtime.db, account_id) == 10

    async def test_refund_gives_back_in_redis(
        self,
        runtime: Runtime,
        limiters: Callable[..., Limiter],
        private_redis: PrivateRedis,
    ) -> None:
        limiter = limiters("redis", private_redis.url)
        account_id = await bare_account(runtime)
        plan = Plan(monthly_requests=5, rate_per_second=1, burst=3)
        first = await limiter.admit(account_id, "key_x", plan, utcnow())
        assert first.ticket is not None
        assert first.rate is not None
        assert (first.used, first.rate.remaining) == (1, 2)
        await limiter.refund(first.ticket)
        again = await limiter.admit(account_id, "key_x", plan, utcnow())
        assert again.rate is not None
        assert (again.used, again.rate.remaining) == (1, 2)
        await limiter.flush()
        assert await stored(runtime.db, account_id) == 1
