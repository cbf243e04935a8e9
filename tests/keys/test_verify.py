"""The one verification path, with its cache: fast, and never stale in-process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.verify import Verifier
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_key,
    listener,
    notification_count,
    notified,
)


@pytest.fixture
async def long_cache_app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    """A cache TTL far longer than any test: only invalidation can refresh an entry."""
    app = create_app(make_settings(cache_ttl_seconds=60))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        if not runtime.db.is_sqlite:
            await asyncio.wait_for(listener(runtime).connected.wait(), 10)
        yield app


@pytest.fixture
async def long_client(long_cache_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=long_cache_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def test_revoke_drops_the_cached_key_at_once(
    long_cache_app: FastAPI, long_client: httpx.AsyncClient
) -> None:
    runtime: Runtime = long_cache_app.state.runtime
    before = notification_count(runtime)
    acc = await create_account(runtime)
    victim = await create_key(runtime, acc.account_id)
    await notified(runtime, before, 2)
    assert (await long_client.get("/keys", headers=bearer(victim.plaintext))).status_code == 200
    assert runtime.cache.get(hash_key(victim.plaintext))[0] is True
    resp = await long_client.post(f"/keys/{victim.row.id}/revoke", headers=acc.auth)
    assert resp.status_code == 200
    refused = await long_client.get("/keys", headers=bearer(victim.plaintext))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "revoked_api_key"


async def test_roll_with_no_grace_ends_the_cached_key_at_once(
    long_cache_app: FastAPI, long_client: httpx.AsyncClient
) -> None:
    runtime: Runtime = long_cache_app.state.runtime
    before = notification_count(runtime)
    acc = await create_account(runtime)
    old = await create_key(runtime, acc.account_id)
    await notified(runtime, before, 2)
    assert (await long_client.get("/keys", headers=bearer(old.plaintext))).status_code == 200
    rolled = await long_client.post(
        f"/keys/{old.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
    )
    assert rolled.status_code == 201
    refused = await long_client.get("/keys", headers=bearer(old.plaintext))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "expired_api_key"


async def test_negative_cache_does_not_hide_a_key_imported_after_a_miss(
    long_cache_app: FastAPI, long_client: httpx.AsyncClient
) -> None:
    runtime: Runtime = long_cache_app.state.runtime
    acc = await create_account(runtime)
    legacy = "legacy_0123456789abcdefghijklmnop"
    admin = bearer(runtime.admin_tokens.first)
    before = await long_client.post("/verify", headers=admin, json={"key": legacy})
    assert before.json()["code"] == "not_found"
    imported = await long_client.post(
        f"/admin/accounts/{acc.account_id}/keys/import",
        headers=admin,
        json={"key": legacy, "name": "legacy", "keyType": "secret"},
    )
    assert imported.status_code == 201
    after = await long_client.post("/verify", headers=admin, json={"key": legacy})
    assert after.json()["code"] == "valid"


async def test_expiry_is_checked_on_every_use_even_from_cache(runtime: Runtime) -> None:
    acc = await create_account(runtime)
    expires = datetime.now(UTC) + timedelta(hours=1)
    before = notification_count(runtime)
    issued = await create_key(runtime, acc.account_id, expires_at=expires)
    await notified(runtime, before)
    verifier = Verifier(runtime)
    assert (await verifier.verify(issued.plaintext)).valid
    hits = runtime.cache.hits
    # The same cached record, one microsecond past its expiry: expired.
    verdict = await verifier.verify(issued.plaintext, now=expires + timedelta(microseconds=1))
    assert runtime.cache.hits == hits + 1
    assert verdict.code == "expired"


async def test_cache_serves_repeat_verifications_without_the_database(runtime: Runtime) -> None:
    before = notification_count(runtime)
    acc = await create_account(runtime)
    await notified(runtime, before)
    verifier = Verifier(runtime)
    await verifier.verify(acc.key)
    misses = runtime.cache.misses
    for _ in range(20):
        assert (await verifier.verify(acc.key)).valid
    assert runtime.cache.misses == misses


async def test_unknown_keys_are_cached_negatively(runtime: Runtime) -> None:
    verifier = Verifier(runtime)
    unknown = runtime.key_format.generate("secret")
    assert (await verifier.verify(unknown)).code == "not_found"
    misses = runtime.cache.misses
    assert (await verifier.verify(unknown)).code == "not_found"
    assert runtime.cache.misses == misses


async def test_malformed_keys_never_reach_the_cache_or_database(runtime: Runtime) -> None:
    key = runtime.key_format.generate("secret")
    broken = key[:-1] + ("A" if key[-1] != "A" else "B")
    verifier = Verifier(runtime)
    size, misses = len(runtime.cache), runtime.cache.misses
    assert (await verifier.verify(broken)).code == "malformed"
    assert (len(runtime.cache), runtime.cache.misses) == (size, misses)
