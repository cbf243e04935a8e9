"""Pooled connections the server dropped are replaced, without a ping at checkout.

PostgreSQL ends backends on a restart, a failover or an idle timeout; here
``pg_terminate_backend`` ends every connection of keyhouse's pool at once.
A connection known closed is replaced at checkout (``refuse_closed_connection``);
one whose close was not read yet fails its first statement: a read by hash
(what verification does) is then repeated on a new connection, a request's
session answers 503 once, and the next requests get new connections. Never
a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg
import httpx
import pytest
from sqlalchemy import event

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.db.engine import refuse_closed_connection
from keyhouse.keys.verify import Verifier
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    listener,
    notification_count,
    notified,
)

pytestmark = pytest.mark.postgresql_only


async def drop_pool_connections(pg_url: str) -> int:
    """End the backends of keyhouse's pool (not the LISTEN one); how many there were."""
    conn = await asyncpg.connect(pg_url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        ended = await conn.fetch(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = 'keyhouse'"
            " AND pid <> pg_backend_pid()"
        )
        # pg_terminate_backend only signals: until a backend has gone, a query
        # sent to it may still be answered (then the test saw a 200, not the 503).
        pids = [row["pid"] for row in ended]
        for _ in range(500):
            if not await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1::int[])", pids
            ):
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the terminated backends did not go within 5 s")
    finally:
        await conn.close()
    return len(ended)


def closes_go_unread(runtime: Runtime) -> None:
    """As if the event loop had not read the server's close before the next checkout."""
    event.remove(runtime.db.engine.sync_engine, "checkout", refuse_closed_connection)


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Runtime, httpx.AsyncClient]]:
    app = create_app(settings)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        runtime: Runtime = app.state.runtime
        # Its first connect clears the cache: not in the middle of a test.
        await asyncio.wait_for(listener(runtime).connected.wait(), 10)
        yield runtime, client


async def statuses_after_a_drop(
    client: httpx.AsyncClient, account: AccountWithKey, pg_url: str, name: str
) -> list[int]:
    assert (await client.get("/keys", headers=account.auth)).status_code == 200
    assert await drop_pool_connections(pg_url) >= 1
    return [
        (await client.get("/environments", headers=account.auth)).status_code,
        (await client.post("/environments", headers=account.auth, json={"name": name})).status_code,
        (await client.get("/keys", headers=account.auth)).status_code,
        (await client.get("/readyz")).status_code,
    ]


async def test_a_verification_is_repeated_on_a_new_connection(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    # No cache: every verification reads the database.
    async with running(make_settings(cache_ttl_seconds=0)) as (runtime, client):
        closes_go_unread(runtime)
        account = await create_account(runtime)
        verifier = Verifier(runtime)
        assert (await verifier.verify(account.key)).code == "valid"
        assert await drop_pool_connections(pg_url) >= 1
        assert (await verifier.verify(account.key)).code == "valid"

        assert await drop_pool_connections(pg_url) >= 1
        response = await client.post(
            "/verify", headers=bearer(runtime.admin_tokens.first), json={"key": account.key}
        )
        assert response.status_code == 200
        assert response.json()["code"] == "valid"


async def test_a_request_on_a_dropped_connection_gets_503_once(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    # The key stays cached: the first statement after the drop is the
    # request session's own, not the verifier's (which would repeat it); and
    # no background flush takes the dropped connection first (then the
    # request gets a new connection and 200).
    settings = make_settings(
        cache_ttl_seconds=60, last_used_flush_seconds=3600, usage_flush_seconds=3600
    )
    async with running(settings) as (runtime, client):
        closes_go_unread(runtime)
        before = notification_count(runtime)
        account = await create_account(runtime)
        # The new key's NOTIFY drops it from the cache: let it come before the
        # key is cached, or the request after the drop verifies it again, on
        # a new connection (Database.read), and gets 200.
        await notified(runtime, before)
        for i in range(3):
            statuses = await statuses_after_a_drop(client, account, pg_url, f"env {i}")
            assert statuses == [503, 201, 200, 200]


async def test_requests_after_a_drop_get_200_or_503_never_500(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    async with running(make_settings(cache_ttl_seconds=60)) as (runtime, client):
        account = await create_account(runtime)
        for i in range(3):
            statuses = await statuses_after_a_drop(client, account, pg_url, f"env {i}")
            # 503 only if the close had not been read yet at the first checkout.
            assert statuses[1:] == [201, 200, 200]
            assert statuses[0] in (200, 503)
