"""AccountRepository's statements on both engines.

``get_for_update`` is what makes the key limit exact under concurrency on
PostgreSQL: a second transaction that wants the same account waits for the
first to end, then sees what it committed.
"""

from __future__ import annotations

from datetime import timedelta

import anyio
import pytest
from sqlalchemy import text

from keyhouse.accounts.repository import AccountRepository
from keyhouse.ids import new_id
from keyhouse.models import Account
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import bare_account


class TestGet:
    async def test_by_id_and_nothing_else(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        async with runtime.db.session(write=False) as session:
            repo = AccountRepository(session)
            found = await repo.get(account_id)
            assert found is not None
            assert found.id == account_id
            # Not an account id (a NUL byte would be an error on PostgreSQL): no query.
            for candidate in ["acc_" + "0" * 26, "acc_\x00", "key_" + account_id[4:], ""]:
                assert await repo.get(candidate) is None
                assert await repo.get_for_update(candidate) is None


class TestList:
    async def test_newest_first_ties_broken_by_id(self, runtime: Runtime) -> None:
        now = utcnow().replace(microsecond=0)
        ids = [new_id("acc")[0] for _ in range(4)]
        created = [now + timedelta(milliseconds=1), now, now, now - timedelta(days=1)]
        async with runtime.db.session(write=True) as session:
            for account_id, at in zip(ids, created, strict=True):
                session.add(Account(id=account_id, name="A", created_at=at))
        async with runtime.db.session(write=False) as session:
            listed = [a.id for a in await AccountRepository(session).list()]
        assert listed == [ids[0], ids[2], ids[1], ids[3]]


async def lock_waiters(runtime: Runtime) -> int:
    """Sessions of this database waiting for a row lock."""
    async with runtime.db.session(write=False) as session:
        result = await session.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
        return int(result.scalar_one())


class TestGetForUpdate:
    @pytest.mark.postgresql_only
    async def test_a_second_transaction_waits_then_sees_the_first_ones_change(
        self, runtime: Runtime
    ) -> None:
        account_id = await bare_account(runtime, max_keys=1)
        seen: list[int | None] = []

        async def second() -> None:
            async with runtime.db.session(write=True) as session:
                account = await AccountRepository(session).get_for_update(account_id)
                assert account is not None
                seen.append(account.max_keys)

        # The first transaction ends (commits) before the task group waits for the second.
        async with anyio.create_task_group() as tg, runtime.db.session(write=True) as session:
            account = await AccountRepository(session).get_for_update(account_id)
            assert account is not None
            account.max_keys = 2
            await session.flush()
            tg.start_soon(second)
            # Poll until the second transaction waits on the row lock (the
            # statement timeout, 2 s, bounds the wait).
            for _ in range(150):
                if await lock_waiters(runtime) == 1:
                    break
                await anyio.sleep(0.01)
            assert await lock_waiters(runtime) == 1
            assert seen == []
        # Committed, then the second one read the row as committed.
        assert seen == [2]
