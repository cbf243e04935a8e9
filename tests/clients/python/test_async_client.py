"""The async client (``AsyncKeyhouse``, ``AsyncAccountClient``) against a live
``keyhouse serve``: the same calls as the sync client, awaited."""

from __future__ import annotations

import secrets
import time

import pytest
from keyhouse_client import (
    AsyncAccountClient,
    AsyncKeyhouse,
    KeyhouseError,
    KeyhouseUnavailable,
)

from tests.clients.python.conftest import Live, unique
from tests.clients.python.standin import Answer, stand_in
from tests.clients.python.test_client import envelope
from tests.limits.conftest import free_port


async def test_operator_calls(async_admin: AsyncKeyhouse) -> None:
    created = await async_admin.accounts.create(unique("Async"), limits={"maxKeys": 10})
    account = created.account
    assert (await async_admin.accounts.get(account.id)).limits.max_keys == 10
    assert account.id in {a.id for a in await async_admin.accounts.list()}
    assert (await async_admin.accounts.update(account.id, name="Renamed")).name == "Renamed"

    key = await async_admin.keys.create(account.id, "backend")
    assert [k.id for k in await async_admin.keys.list(account.id, key_type="secret")] == [
        key.id,
        created.key.id,
    ]
    assert (await async_admin.keys.get(key.id)).name == "backend"
    assert (await async_admin.keys.update(key.id, name="api")).name == "api"
    rolled = await async_admin.keys.roll(key.id, expires_in_seconds=0)
    assert (await async_admin.verify(key.key)).code == "expired"
    assert (await async_admin.keys.revoke(rolled.id)).revoked
    imported = await async_admin.keys.import_(
        account.id, "legacy_" + secrets.token_urlsafe(24), name="old", key_type="secret"
    )
    assert imported.account_id == account.id

    verdict = await async_admin.verify(created.key.key)
    assert (verdict.valid, verdict.key_id) == (True, created.key.id)

    types = [e.type async for e in async_admin.events.list(account_id=account.id, page_size=2)]
    assert types[-1] == "account.created"
    assert {"key.created", "key.renamed", "key.rolled", "key.revoked"} <= set(types)
    page = await async_admin.events.page(limit=1, account_id=account.id)
    assert page.has_more
    assert page.events[0].type == types[0]


async def test_account_calls(async_admin: AsyncKeyhouse, live: Live) -> None:
    created = await async_admin.accounts.create(unique("AsyncOwn"))
    async with AsyncAccountClient(live.url, created.key.key) as client:
        staging = await client.environments.create("staging")
        assert [e.id for e in await client.environments.list()] == [staging.id]
        key = await client.keys.create("scoped", environment_id=staging.id)
        assert (await client.keys.get(key.id)).environment_id == staging.id
        assert (await client.keys.rename(key.id, "renamed")).name == "renamed"
        rolled = await client.keys.roll(key.id)
        assert (await client.keys.revoke(rolled.id)).revoked
        assert len(await client.keys.list(revoked=True)) == 1
        me = await client.account.get()
        assert me.id == created.account.id
        assert me.usage is not None
        events = [e async for e in client.events.list(page_size=2)]
        assert len(events) == len((await client.events.page(limit=100)).events)


async def test_the_verify_token(live: Live) -> None:
    async with AsyncKeyhouse(live.url, live.verify_token) as verifier:
        assert (await verifier.verify("unknown_" + secrets.token_urlsafe(24))).code == "not_found"
        with pytest.raises(KeyhouseError) as caught:
            await verifier.accounts.list()
    assert (caught.value.status, caught.value.code) == (403, "insufficient_permissions")


async def test_429_is_retried_after_retry_after(async_admin: AsyncKeyhouse, live: Live) -> None:
    created = await async_admin.accounts.create(
        unique("AsyncSlow"), limits={"ratePerSecond": 1, "burst": 1}
    )
    async with AsyncAccountClient(live.url, created.key.key) as client:
        await client.keys.list()
        started = time.monotonic()
        await client.keys.list()
        assert time.monotonic() - started >= 0.9
    other = await async_admin.accounts.create(
        unique("AsyncNoRetry"), limits={"ratePerSecond": 1, "burst": 1}
    )
    async with AsyncAccountClient(live.url, other.key.key, max_retries=0) as client:
        await client.keys.list()
        with pytest.raises(KeyhouseError) as caught:
            await client.keys.list()
    assert (caught.value.status, caught.value.code, caught.value.retry_after) == (
        429,
        "rate_limited",
        1.0,
    )


async def test_503_retried_with_one_idempotency_key() -> None:
    unavailable = Answer(503, envelope("service_unavailable"), headers=(("Retry-After", "0"),))
    with stand_in(unavailable) as server:
        async with AsyncKeyhouse(server.url, "t" * 24, max_retries=1) as client:
            with pytest.raises(KeyhouseUnavailable):
                await client.keys.roll("key_1")
    assert len(server.requests) == 2
    assert len({headers["Idempotency-Key"] for _, _, headers in server.requests}) == 1


async def test_unreachable_and_timeout() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncKeyhouse(url, "t" * 24, max_retries=0) as client:
        with pytest.raises(KeyhouseUnavailable) as caught:
            await client.accounts.list()
    assert (caught.value.status, caught.value.code) == (None, "connect_error")
    with stand_in(Answer(200, b"{}", hold=True)) as server:
        async with AsyncKeyhouse(server.url, "t" * 24, timeout=0.3) as client:
            with pytest.raises(KeyhouseUnavailable) as caught:
                await client.accounts.list()
    assert caught.value.code == "timeout"
