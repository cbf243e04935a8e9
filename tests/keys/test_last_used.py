"""lastUsedAt is written behind: batched, at most once per key per flush."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import httpx
from sqlalchemy import select

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.verify import Verifier
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.factories import create_account, create_key


async def stored_last_used(runtime: Runtime, key_id: str) -> datetime | None:
    async with runtime.db.session(write=False) as session:
        value = (
            await session.execute(select(ApiKey.last_used_at).where(ApiKey.id == key_id))
        ).scalar_one()
    return value


async def test_many_uses_are_one_write_per_key(runtime: Runtime) -> None:
    acc = await create_account(runtime)
    keys = [await create_key(runtime, acc.account_id) for _ in range(3)]
    verifier = Verifier(runtime)
    for _ in range(50):
        for issued in keys:
            assert (await verifier.verify(issued.plaintext)).valid
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
        assert (await Verifier(runtime).verify(acc.key)).valid
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
        assert (await Verifier(runtime).verify(acc.key)).valid
        # Poll (bounded) for the background flush, instead of sleeping a guess.
        for _ in range(500):
            if await stored_last_used(runtime, acc.key_id) is not None:
                break
            await anyio.sleep(0.01)
        assert await stored_last_used(runtime, acc.key_id) is not None
