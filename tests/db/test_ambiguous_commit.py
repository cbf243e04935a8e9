"""A write whose COMMIT succeeded is never answered 503, even when the answer to COMMIT is lost.

Found in an outage: a roll with grace 0 committed (the old key expired at
once) and was answered 503, so its new key was never shown, and the retry
got 409 (the key was expired). keyhouse now asks PostgreSQL what became of
the transaction (``pg_xact_status``, on a new connection) before it
believes a failed COMMIT; when even that cannot be asked, the client's
``Idempotency-Key`` gets it the answer on a retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import func, make_url, select

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.models import ApiKey, IdempotencyRecord
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.commit_proxy import CommitProxy, commit_proxy
from tests.factories import (
    AccountWithKey,
    bearer,
    committed,
    create_account,
    create_key,
    expect_error,
)

pytestmark = pytest.mark.postgresql_only

GRACE_0 = {"expiresInSeconds": 0}


@asynccontextmanager
async def through_proxy(
    make_settings: Callable[..., Settings], pg_url: str
) -> AsyncIterator[tuple[CommitProxy, Runtime, httpx.AsyncClient]]:
    real = make_url(pg_url)
    async with commit_proxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        # No background flush may be the COMMIT the proxy loses.
        settings = make_settings(
            database_url=url, last_used_flush_seconds=3600, usage_flush_seconds=3600
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield proxy, app.state.runtime, client


async def keys_of(runtime: Runtime, account_id: str) -> int:
    async with runtime.db.session(write=False) as session:
        count = await session.scalar(select(func.count()).where(ApiKey.account_id == account_id))
    return int(count or 0)


async def second_key(runtime: Runtime, client: httpx.AsyncClient) -> tuple[AccountWithKey, str]:
    """An account with a second key to roll; the account's usage already loaded (the
    first call of an account reads it, and that read's COMMIT must not be the one lost)."""
    acc = await create_account(runtime)
    key_id = (await create_key(runtime, acc.account_id)).row.id
    assert (await client.get("/keys", headers=acc.auth)).status_code == 200
    return acc, key_id


async def test_a_commit_whose_answer_is_lost_is_answered_as_committed(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    async with through_proxy(make_settings, pg_url) as (proxy, runtime, client):
        acc, key_id = await second_key(runtime, client)
        proxy.lose_answer()
        rolled = await client.post(f"/keys/{key_id}/roll", headers=acc.auth, json=GRACE_0)
        assert proxy.cut.is_set()
        assert rolled.status_code == 201
        # It did commit: the old key expired, and the new one works.
        old = await committed(runtime, ApiKey, key_id)
        assert old is not None
        assert old.expires_at is not None
        assert old.expires_at <= utcnow()
        new_key = rolled.json()["key"]
        assert (await client.get("/keys", headers=bearer(new_key))).status_code == 200
        assert await keys_of(runtime, acc.account_id) == 3


async def test_a_commit_that_never_reached_the_server_is_503_and_changes_nothing(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    async with through_proxy(make_settings, pg_url) as (proxy, runtime, client):
        acc, key_id = await second_key(runtime, client)
        proxy.lose_commit()
        rolled = await client.post(f"/keys/{key_id}/roll", headers=acc.auth, json=GRACE_0)
        assert proxy.cut.is_set()
        expect_error(rolled, 503, "service_unavailable")
        old = await committed(runtime, ApiKey, key_id)
        assert old is not None
        assert old.expires_at is None
        assert await keys_of(runtime, acc.account_id) == 2


async def test_in_an_outage_the_idempotency_key_gets_the_committed_answer(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """The issue's case: the commit's answer is lost and the database stays away."""
    async with through_proxy(make_settings, pg_url) as (proxy, runtime, client):
        acc, key_id = await second_key(runtime, client)
        headers = {**acc.auth, "Idempotency-Key": "roll-after-leak-1"}
        proxy.lose_answer(outage=True)
        first = await client.post(f"/keys/{key_id}/roll", headers=headers, json=GRACE_0)
        assert proxy.cut.is_set()
        expect_error(first, 503, "service_unavailable")
        await proxy.restore()

        retry = await client.post(f"/keys/{key_id}/roll", headers=headers, json=GRACE_0)
        assert retry.status_code == 201
        assert retry.headers["idempotent-replayed"] == "true"
        # The key the committed roll made, shown again; it works, and it is the only one.
        assert await keys_of(runtime, acc.account_id) == 3
        new = await committed(runtime, ApiKey, retry.json()["id"])
        assert new is not None
        assert new.name == "test key"
        assert (await client.get("/keys", headers=bearer(retry.json()["key"]))).status_code == 200
        # Without the Idempotency-Key, the retry is a new roll of an expired key.
        again = await client.post(f"/keys/{key_id}/roll", headers=acc.auth, json=GRACE_0)
        expect_error(again, 409, "conflict")
        async with runtime.db.session(write=False) as session:
            records = await session.scalar(select(func.count()).select_from(IdempotencyRecord))
        assert records == 1
