"""UsageRepository (limits/store.py): the usage row's statements on both engines.

The upserts differ per dialect (SQLite's max() is PostgreSQL's greatest()),
so each statement is pinned on both. Each call runs in its own transaction,
as the limiter runs them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from keyhouse.limits.repository import UsageRepository
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
        await run(runtime, lambda repo: repo.add(account_id, PERIOD, 5))
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        assert await count(runtime, account_id) == 5


class TestAdd:
    async def test_adds_per_account_and_period(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        await run(runtime, lambda repo: repo.add(account_id, PERIOD, 3))
        await run(runtime, lambda repo: repo.add(account_id, PERIOD, 4))
        await run(runtime, lambda repo: repo.add(account_id, "2026-12", 1))
        assert await count(runtime, account_id) == 7
        assert await count(runtime, account_id, "2026-12") == 1
        assert await count(runtime, other_id) == 0


class TestRaiseTo:
    async def test_never_lowers_the_count(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)

        async def raise_to(value: int) -> int:
            await run(runtime, lambda repo: repo.raise_to(account_id, PERIOD, value))
            return await count(runtime, account_id)

        seen = [await raise_to(value) for value in [10, 4, 12, 0]]
        assert seen == [10, 10, 12, 12]


class TestTake:
    async def test_counts_one_while_below_the_limit(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        # No row yet: nothing to take from (the limiter ensures it first).
        assert await run(runtime, lambda repo: repo.take(account_id, PERIOD, 5)) is False
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        taken = [
            await run(runtime, lambda repo: repo.take(account_id, PERIOD, 2)) for _ in range(3)
        ]
        assert taken == [True, True, False]
        assert await count(runtime, account_id) == 2
        assert await run(runtime, lambda repo: repo.take(account_id, PERIOD, 0)) is False

    async def test_exact_under_concurrency(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        await run(runtime, lambda repo: repo.ensure(account_id, PERIOD))
        taken: list[bool] = []

        async def take() -> None:
            taken.append(await run(runtime, lambda repo: repo.take(account_id, PERIOD, 4)))

        async with anyio.create_task_group() as tg:
            for _ in range(10):
                tg.start_soon(take)
        assert sorted(taken) == [False] * 6 + [True] * 4
        assert await count(runtime, account_id) == 4
