"""UsageRepository (limits/repository.py): the usage rows' statements on both engines.

The upserts and RETURNING differ per dialect, so each statement is pinned
on both. Each call runs in its own transaction, as the limiter runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import anyio
from sqlalchemy import select

from keyhouse.limits.repository import UsageRepository
from keyhouse.models import UsageFlush
from keyhouse.runtime import Runtime
from tests.factories import bare_account

T = TypeVar("T")
PERIOD = "2026-11"


async def run(runtime: Runtime, call: Callable[[UsageRepository], Awaitable[T]]) -> T:
    async with runtime.db.session(write=True) as session:
        return await call(UsageRepository(session, is_sqlite=runtime.db.is_sqlite))


async def count(runtime: Runtime, account_id: str, period: str = PERIOD) -> int:
    return await run(runtime, lambda repo: repo.get(account_id, period))


class TestGet:
    async def test_zero_without_a_row(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        assert await count(runtime, account_id) == 0


class TestEnsure:
    async def test_makes_the_row_once_and_keeps_its_count(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        await run(runtime, lambda repo: repo.add_many([(account_id, PERIOD, 5)]))
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        assert await count(runtime, account_id) == 5


class TestAddMany:
    async def test_adds_per_account_and_period(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        await run(runtime, lambda repo: repo.add_many([(account_id, PERIOD, 3)]))
        await run(runtime, lambda repo: repo.add_many([(account_id, PERIOD, 4)]))
        await run(runtime, lambda repo: repo.add_many([(account_id, "2026-12", 1)]))
        assert await count(runtime, account_id) == 7
        assert await count(runtime, account_id, "2026-12") == 1
        assert await count(runtime, other_id) == 0

    async def test_many_rows_in_one_call_and_their_versions(self, runtime: Runtime) -> None:
        ids = [await bare_account(runtime) for _ in range(3)]
        first = await run(runtime, lambda repo: repo.add_many([(i, PERIOD, 2) for i in ids]))
        # (requests, version, fallback) of each row after it.
        assert first == {(i, PERIOD): (2, 1, 0) for i in ids}
        # Each write bumps the row's version, a negative count too (a refund).
        again = await run(runtime, lambda repo: repo.add_many([(ids[0], PERIOD, -1)]))
        assert again == {(ids[0], PERIOD): (1, 2, 0)}
        assert [await count(runtime, i) for i in ids] == [1, 2, 2]
        got = await run(runtime, lambda repo: repo.get_counted(ids[0], PERIOD))
        assert got == (1, 2, 0)


class TestClaimFlush:
    async def test_a_batch_number_is_claimed_once(self, runtime: Runtime) -> None:
        at = datetime.now(UTC)

        async def claim(instance: str, batch: int) -> bool:
            return await run(runtime, lambda repo: repo.claim_flush(instance, batch, at))

        assert [await claim("a", 1), await claim("a", 1), await claim("a", 2)] == [
            True,
            False,
            True,
        ]
        # An older batch is never claimed again; other instances are apart.
        assert [await claim("a", 1), await claim("b", 1)] == [False, True]

    async def test_prune_forgets_old_marks_only(self, runtime: Runtime) -> None:
        now = datetime.now(UTC)
        await run(runtime, lambda repo: repo.claim_flush("old", 1, now - timedelta(days=8)))
        await run(runtime, lambda repo: repo.claim_flush("new", 1, now))
        await run(runtime, lambda repo: repo.prune_flushes(now - timedelta(days=7)))
        async with runtime.db.session(write=False) as session:
            left = (await session.execute(select(UsageFlush.instance))).scalars().all()
        assert left == ["new"]


class TestTake:
    async def test_counts_one_while_below_the_limit(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        # No row yet: nothing to take from (the limiter ensures it first).
        assert await run(runtime, lambda repo: repo.take(account_id, PERIOD, 5)) is None
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        taken = [
            await run(runtime, lambda repo: repo.take(account_id, PERIOD, 2)) for _ in range(3)
        ]
        # (requests, version, fallback) after each take; None once the limit is reached.
        assert taken == [(1, 1, 1), (2, 2, 2), None]
        assert await count(runtime, account_id) == 2
        assert await run(runtime, lambda repo: repo.take(account_id, PERIOD, 0)) is None

    async def test_exact_under_concurrency(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        taken: list[bool] = []

        async def take() -> None:
            got = await run(runtime, lambda repo: repo.take(account_id, PERIOD, 4))
            taken.append(got is not None)

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(take)
        assert sorted(taken) == [False] * 6 + [True] * 4
        assert await count(runtime, account_id) == 4
