"""lastUsedAt is written behind: batched, at most once per key per flush."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.keys.last_used import LastUsed
from keyhouse.keys.verify import verify_key
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.factories import create_account, create_key
from tests.proxy import tcp_proxy


async def stored_last_used(runtime: Runtime, key_id: str) -> datetime | None:
    async with runtime.db.session(write=False) as session:
        value = (
            await session.execute(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
        ).scalar_one()
    return value


async def test_only_uses_that_pass_mark_last_used(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    """Review r15: a use refused after authentication (its IP allowlist, its
    scopes; on POST /verify and on the API) set lastUsedAt as if it had passed."""
    acc = await create_account(runtime)
    admin = {"Authorization": f"Bearer {runtime.admin_tokens.first}"}

    async def make(**body: object) -> tuple[str, str]:
        resp = await client.post(
            "/keys", headers=acc.auth, json={"name": "k", "keyType": "secret", **body}
        )
        assert resp.status_code == 201, resp.text
        return resp.json()["id"], resp.json()["key"]

    def pending(key_id: str) -> datetime | None:
        return runtime.last_used.pending_lookup()(key_id)

    fenced_id, fenced = await make(restrictions={"ipAllowlist": ["203.0.113.0/24"]})
    reader_id, reader = await make(scopes=["keys:read"])
    for body in ({"key": fenced, "ip": "198.51.100.7"}, {"key": fenced}):
        answer = (await client.post("/verify", headers=admin, json=body)).json()
        assert answer["code"] == "ip_not_allowed"
    refused = await client.get("/keys", headers={"Authorization": f"Bearer {fenced}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "ip_not_allowed"
    answer = (
        await client.post("/verify", headers=admin, json={"key": reader, "scopes": ["keys:write"]})
    ).json()
    assert answer["code"] == "insufficient_scope"
    for method, path in (("GET", "/environments"), ("GET", "/account"), ("GET", "/events")):
        resp = await client.request(method, path, headers={"Authorization": f"Bearer {reader}"})
        assert resp.status_code == 403, path
        assert resp.json()["error"]["code"] == "insufficient_scope", path
    assert pending(fenced_id) is None
    assert pending(reader_id) is None
    await runtime.last_used.flush(runtime.db)
    assert await stored_last_used(runtime, fenced_id) is None
    assert await stored_last_used(runtime, reader_id) is None
    listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
    assert all("lastUsedAt" not in k for k in listed if k["id"] in (fenced_id, reader_id))
    # A use that passes marks it, on both paths.
    ok = await client.post("/verify", headers=admin, json={"key": fenced, "ip": "203.0.113.7"})
    assert ok.json()["valid"] is True
    assert pending(fenced_id) is not None
    assert (await client.get("/keys", headers={"Authorization": f"Bearer {reader}"})).is_success
    assert pending(reader_id) is not None


async def test_many_uses_are_one_write_per_key(runtime: Runtime) -> None:
    acc = await create_account(runtime)
    keys = [await create_key(runtime, acc.account_id) for _ in range(3)]
    for _ in range(50):
        for issued in keys:
            assert (await verify_key(runtime, issued.plaintext, None))["valid"]
    before = runtime.last_used.rows_written
    sent = await runtime.last_used.flush(runtime.db)
    assert sent == 3
    assert runtime.last_used.rows_written - before == 3
    assert await runtime.last_used.flush(runtime.db) == 0  # nothing new: no write
    for issued in keys:
        assert await stored_last_used(runtime, issued.row.id) is not None


async def test_flush_never_moves_last_used_back(runtime: Runtime) -> None:
    acc = await create_account(runtime)
    issued = await create_key(runtime, acc.account_id)
    later = datetime.now(UTC) + timedelta(minutes=5)
    runtime.last_used.touch(issued.row.id, later)
    await runtime.last_used.flush(runtime.db)
    runtime.last_used.touch(issued.row.id, later - timedelta(minutes=1))
    await runtime.last_used.flush(runtime.db)
    stored = await stored_last_used(runtime, issued.row.id)
    assert stored is not None
    assert abs((stored - later).total_seconds()) < 0.001


async def test_pending_uses_show_in_get_keys_before_any_write(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(last_used_flush_seconds=3600))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await create_account(runtime)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            body = (await client.get("/keys", headers=acc.auth)).json()
        assert "lastUsedAt" in body["keys"][0]
        assert await stored_last_used(runtime, acc.key_id) is None


async def test_graceful_shutdown_flushes_pending_uses(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(last_used_flush_seconds=3600)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await create_account(runtime)
        assert (await verify_key(runtime, acc.key, None))["valid"]
        assert await stored_last_used(runtime, acc.key_id) is None
    after = create_app(settings)
    async with after.router.lifespan_context(after):
        assert await stored_last_used(after.state.runtime, acc.key_id) is not None


async def test_flush_loop_writes_without_shutdown(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(last_used_flush_seconds=0.05))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await create_account(runtime)
        assert (await verify_key(runtime, acc.key, None))["valid"]
        # Poll (bounded) for the background flush, instead of sleeping a guess.
        for _ in range(500):
            if await stored_last_used(runtime, acc.key_id) is not None:
                break
            await anyio.sleep(0.01)
        assert await stored_last_used(runtime, acc.key_id) is not None


@pytest.mark.postgresql_only
async def test_concurrent_flushes_of_many_processes_never_deadlock(runtime: Runtime) -> None:
    # Six processes write the same 60 keys at once, each having seen them in
    # an order of its own: in arbitrary order these flushes deadlock within a
    # few rounds; in key id order they wait in turn.
    acc = await create_account(runtime)
    keys = [(await create_key(runtime, acc.account_id)).row.id for _ in range(60)]
    processes = [LastUsed() for _ in range(6)]
    rng = random.Random(7)
    start = datetime.now(UTC)
    for round_ in range(6):
        for last_used in processes:
            for key_id in rng.sample(keys, len(keys)):
                jitter = timedelta(seconds=round_, microseconds=rng.randrange(999))
                last_used.touch(key_id, start + jitter)
        results = await asyncio.gather(
            *(last_used.flush(runtime.db) for last_used in processes), return_exceptions=True
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
    for key_id in keys:
        stored = await stored_last_used(runtime, key_id)
        assert stored is not None
        assert stored >= start + timedelta(seconds=5)


@pytest.mark.postgresql_only
async def test_a_flush_whose_database_is_down_writes_its_uses_later(
    runtime: Runtime, settings: Settings
) -> None:
    acc = await create_account(runtime)
    assert settings.database_url is not None
    url = make_url(settings.database_url)
    assert url.host is not None
    assert url.port is not None
    used_at = datetime.now(UTC)
    async with tcp_proxy(url.host, url.port) as proxy:
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        db = Database(settings.model_copy(update={"database_url": proxied}))
        last_used = LastUsed()
        try:
            last_used.touch(acc.key_id, used_at)
            proxy.cut()
            with pytest.raises((SQLAlchemyError, OSError)):
                await last_used.flush(db)
            assert last_used.pending_lookup()(acc.key_id) == used_at  # kept, still shown
            await proxy.start()
            assert await last_used.flush(db) == 1
        finally:
            await db.dispose()
    stored = await stored_last_used(runtime, acc.key_id)
    assert stored is not None
    assert abs((stored - used_at).total_seconds()) < 0.001
