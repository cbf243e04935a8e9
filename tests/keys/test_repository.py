"""KeyRepository's statements on both engines, on rows written as given.

Timestamps are stored as text on SQLite and compared as text there, so the
boundaries (an expiry equal to "now", ties in ``created_at``) are pinned on
both engines.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from keyhouse.keys.record import KeyRecord
from keyhouse.keys.repository import KeyRepository, find_record
from keyhouse.limits.plan import Plan
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import bare_account, create_environment, insert_key

ONE_MS = timedelta(milliseconds=1)


async def list_ids(runtime: Runtime, account_id: str, **filters: Any) -> list[str]:
    async with runtime.db.session(write=False) as session:
        rows = await KeyRepository(session).list(account_id, **filters)
        return [row[0] for row in rows]


class TestGetByHash:
    async def test_finds_the_key_of_that_hash_in_any_account(self, runtime: Runtime) -> None:
        first, second = await bare_account(runtime), await bare_account(runtime)
        async with runtime.db.session(write=True) as session:
            mine = insert_key(session, first)
            theirs = insert_key(session, second)
        async with runtime.db.session(write=False) as session:
            repo = KeyRepository(session)
            for row in [mine, theirs]:
                found = await repo.get_by_hash(row.key_hash)
                assert found is not None
                assert (found.id, found.account_id) == (row.id, row.account_id)
            assert await repo.get_by_hash(bytes(32)) is None


class TestFindRecord:
    @pytest.mark.parametrize(
        "plan", [Plan(1000, 5, 10), Plan(None, None, None)], ids=["limited", "unlimited"]
    )
    async def test_the_key_with_its_accounts_plan(self, runtime: Runtime, plan: Plan) -> None:
        account_id = await bare_account(
            runtime,
            monthly_requests=plan.monthly_requests,
            rate_per_second=plan.rate_per_second,
            burst=plan.burst,
            max_keys=7,  # not part of what verification enforces
        )
        async with runtime.db.session(write=True) as session:
            row = insert_key(session, account_id)
        async with runtime.db.reader() as connection:
            found = await find_record(connection, row.key_hash)
            missing = await find_record(connection, bytes(32))
        assert found is not None
        assert (found.id, found.plan) == (row.id, plan)
        assert missing is None

    async def test_what_verification_decides_on(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        env = await create_environment(runtime, account_id, "prod")
        expires_at = utcnow().replace(microsecond=123000) + timedelta(days=1)
        async with runtime.db.session(write=True) as session:
            row = insert_key(
                session,
                account_id,
                key_type="public",
                environment_id=env.id,
                revoked=True,
                expires_at=expires_at,
            )
        async with runtime.db.reader() as connection:
            found = await find_record(connection, row.key_hash)
        assert found == KeyRecord(
            id=row.id,
            account_id=account_id,
            environment_id=env.id,
            key_type="public",
            name="inserted",
            revoked=True,
            expires_at=expires_at,
            expiry_recorded=False,
            plan=Plan(),
        )


class TestList:
    async def test_newest_first_ties_broken_by_id(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        now = utcnow().replace(microsecond=0)
        async with runtime.db.session(write=True) as session:
            # Ids are made in this order; created_at says otherwise for the first.
            newest = insert_key(session, account_id, created_at=now + ONE_MS)
            tie_low = insert_key(session, account_id, created_at=now)
            tie_high = insert_key(session, account_id, created_at=now)
            oldest = insert_key(session, account_id, created_at=now - timedelta(days=400))
        assert newest.id < tie_low.id < tie_high.id < oldest.id
        assert await list_ids(runtime, account_id) == [
            newest.id,
            tie_high.id,
            tie_low.id,
            oldest.id,
        ]

    async def test_filters_alone_and_together(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        env = (await create_environment(runtime, account_id, "staging")).id
        other_env = (await create_environment(runtime, other_id, "staging")).id
        async with runtime.db.session(write=True) as session:
            wide = insert_key(session, account_id)
            public = insert_key(session, account_id, key_type="public", environment_id=env)
            revoked = insert_key(session, account_id, environment_id=env, revoked=True)
            # Expired is not revoked: it lists under revoked=False.
            expired = insert_key(session, account_id, expires_at=utcnow() - ONE_MS)
            insert_key(session, other_id, environment_id=other_env)
        w, p, r, x = wide.id, public.id, revoked.id, expired.id

        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({}, [x, r, p, w]),
            ({"environment_id": env}, [r, p]),
            ({"key_type": "public"}, [p]),
            ({"key_type": "secret"}, [x, r, w]),
            ({"revoked": True}, [r]),
            ({"revoked": False}, [x, p, w]),
            ({"environment_id": env, "key_type": "secret", "revoked": True}, [r]),
            ({"environment_id": env, "key_type": "public", "revoked": True}, []),
            ({"environment_id": other_env}, []),
            # Not an environment id: no query (PostgreSQL refuses some strings).
            ({"environment_id": "env_\x00"}, []),
        ]
        # Each combination of filters is a statement built once and reused:
        # running them one after another checks the reuse keeps them apart.
        for filters, expected in cases + cases[::-1]:
            assert await list_ids(runtime, account_id, **filters) == expected, filters


class TestCountActive:
    async def test_keys_in_force_at_the_given_time(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        at = utcnow().replace(microsecond=500_000)
        async with runtime.db.session(write=True) as session:
            insert_key(session, account_id)  # no expiry
            insert_key(session, account_id, key_type="public")
            insert_key(session, account_id, expires_at=at + ONE_MS)
            insert_key(session, account_id, expires_at=at)  # ends at that very moment
            insert_key(session, account_id, revoked=True)
            insert_key(session, other_id)
        async with runtime.db.session(write=False) as session:
            repo = KeyRepository(session)
            assert await repo.count_active(account_id, at=at) == 3
            assert await repo.count_active(account_id, at=at - ONE_MS) == 4
            assert await repo.count_active(account_id, at=at + ONE_MS) == 2


class TestCountActiveAccountSecrets:
    async def test_only_lasting_account_wide_secret_keys_other_than_the_one(
        self, runtime: Runtime
    ) -> None:
        account_id = await bare_account(runtime)
        env = (await create_environment(runtime, account_id, "staging")).id
        after = utcnow() + timedelta(hours=1)
        async with runtime.db.session(write=True) as session:
            target = insert_key(session, account_id)
            insert_key(session, account_id, key_type="public")
            insert_key(session, account_id, environment_id=env)
            insert_key(session, account_id, revoked=True)
            insert_key(session, account_id, expires_at=after)  # ends as the horizon does
            lasting = insert_key(session, account_id, expires_at=after + ONE_MS)
        async with runtime.db.session(write=False) as session:
            repo = KeyRepository(session)
            count = repo.count_active_account_secrets
            assert await count(account_id, active_after=after, excluding=target.id) == 1
            assert await count(account_id, active_after=after, excluding=lasting.id) == 1
            assert await count(account_id, active_after=after - ONE_MS, excluding=target.id) == 2
