"""The database goes away: 503 within the bound, cached keys keep verifying, service resumes.

keyhouse reaches the real PostgreSQL through a TCP proxy the test controls
(tests/proxy.py): ``black_hole()`` holds every connection without an answer
(what a partition or a dead host does: only timeouts end it), ``reset()``
ends every connection with an RST and refuses new ones.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
from sqlalchemy import make_url

from keyhouse.app import create_app
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys import changes
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    create_key,
    expect_error,
    listener,
)
from tests.limits.conftest import served
from tests.proxy import Proxy, tcp_proxy

pytestmark = pytest.mark.postgresql_only

# What the README promises: 503 within KEYHOUSE_DB_CONNECT_TIMEOUT_SECONDS
# (2 s); the answer itself takes milliseconds, a loaded 2-core CI machine
# may take longer to schedule it: 40 requests at once on a 2-core machine
# running other test servers took 3.79 s once (alone: 2.0 s, 15 of 15). The
# old code took 12 s for the 40th, so the test still tells the two apart.
BOUND = 2.0
SLACK = 2.0


def proxied(pg_url: str, proxy: Proxy) -> str:
    """``pg_url`` through ``proxy``.

    ssl=disable: asyncpg's SSL negotiation (sslmode "prefer") leaves a
    future's error unread when a connect is cancelled between the TCP
    handshake and the SSLRequest's answer; asyncio logs it, and anyio fails
    the test for it. The local server has no TLS anyway.
    """
    return (
        make_url(pg_url)
        .set(host="127.0.0.1", port=proxy.port)
        .update_query_dict({"ssl": "disable"})
        .render_as_string(hide_password=False)
    )


@asynccontextmanager
async def through_proxy(
    make_settings: Callable[..., Settings], pg_url: str, **overrides: object
) -> AsyncIterator[tuple[Proxy, Runtime, httpx.AsyncClient]]:
    real = make_url(pg_url)
    async with tcp_proxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        app = create_app(make_settings(database_url=proxied(pg_url, proxy), **overrides))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            await asyncio.wait_for(listener(runtime).connected.wait(), 10)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield proxy, runtime, client


async def timed(call: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    start = time.monotonic()
    response = await call
    return response, time.monotonic() - start


class TestBlackHole:
    async def test_each_kind_of_request_gets_503_within_the_bound(
        self, make_settings: Callable[..., Settings], pg_url: str
    ) -> None:
        async with through_proxy(make_settings, pg_url) as (proxy, runtime, client):
            account = await create_account(runtime)
            uncached = await create_key(runtime, account.account_id, key_type="public")
            admin = bearer(runtime.admin_tokens.first)
            # Warm: the pool holds connections, the account's key is cached.
            assert (await client.get("/keys", headers=account.auth)).status_code == 200
            requests: dict[str, Callable[[], Awaitable[httpx.Response]]] = {
                "POST /verify, a key not cached": lambda: client.post(
                    "/verify", headers=admin, json={"key": uncached.plaintext}
                ),
                "GET /keys": lambda: client.get("/keys", headers=account.auth),
                "POST /keys": lambda: client.post(
                    "/keys", headers=account.auth, json={"name": "n", "keyType": "public"}
                ),
                "GET /readyz": lambda: client.get("/readyz"),
            }
            # Each kind first into a fresh outage, then 40 at once: more than
            # the pool holds (10 + 20 overflow), so most wait for a checkout.
            took: dict[str, float] = {}
            for name, send in requests.items():
                proxy.black_hole()
                response, took[name] = await timed(send())
                expect_error(response, 503, "service_unavailable")
                assert response.headers["retry-after"] == "2"
                await self.recover(proxy, client, account)
            slowest = max(took.values())
            assert slowest <= BOUND + SLACK, took

            proxy.black_hole()
            responses = await asyncio.gather(
                *(timed(client.get("/keys", headers=account.auth)) for _ in range(40))
            )
            assert {r.status_code for r, _ in responses} == {503}
            slowest = max(t for _, t in responses)
            assert slowest <= BOUND + SLACK, f"slowest of 40: {slowest:.2f} s"
            await self.recover(proxy, client, account)

    async def recover(
        self, proxy: Proxy, client: httpx.AsyncClient, account: AccountWithKey
    ) -> None:
        """Back by itself: connecting is tried again at most one timeout after the
        last failure (db/engine.py, Reachability)."""
        proxy.restore()
        back = time.monotonic()
        for path, headers in [("/keys", account.auth), ("/readyz", {})]:
            while (await client.get(path, headers=headers)).status_code != 200:
                assert time.monotonic() - back <= BOUND + 3, f"{path} not back within 5 s"
                await asyncio.sleep(0.05)


async def revoke_directly(make_settings: Callable[..., Settings], pg_url: str, key_id: str) -> None:
    """Revoke as another process does: on a connection of its own, not through the proxy."""
    app = create_app(make_settings(database_url=pg_url))
    async with app.router.lifespan_context(app):
        other: Runtime = app.state.runtime
        async with changes.session(other, write=True) as session:
            await KeyService(session, other).revoke(None, key_id, force=True, actor=CLI)


async def verdict(client: httpx.AsyncClient, admin: dict[str, str], key: str) -> str:
    """``valid``, ``revoked``, ... or ``503``."""
    response = await client.post("/verify", headers=admin, json={"key": key})
    if response.status_code == 503:
        return "503"
    assert response.status_code == 200
    code: str = response.json()["code"]
    return code


class TestConnectionsReset:
    """Every connection reset, the database unreachable: the notification gap.

    A key verified 0.5 s before keeps verifying until its cache TTL (counted
    from the start of the read); a revocation made meanwhile by another
    process, whose NOTIFY this one never hears, is honoured within the TTL:
    no ``valid`` answer after it, and ``revoked`` once the database is back.
    """

    TTL = 3.0

    async def wait_lost(self, runtime: Runtime) -> None:
        for _ in range(500):
            if not listener(runtime).connected.is_set():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the listener did not notice the reset within 5 s")

    @pytest.mark.parametrize("gap", ["longer than the TTL", "shorter than the TTL"])
    async def test_a_cached_key_verifies_until_its_ttl_and_a_missed_revocation_within_it(
        self, make_settings: Callable[..., Settings], pg_url: str, gap: str
    ) -> None:
        async with through_proxy(make_settings, pg_url, cache_ttl_seconds=self.TTL) as (
            proxy,
            runtime,
            client,
        ):
            account = await create_account(runtime)
            victim = await create_key(runtime, account.account_id)
            admin = bearer(runtime.admin_tokens.first)
            # Cached: a NOTIFY of the creation arriving during the read keeps
            # its result out of the cache (the epoch check); read again then.
            key_hash = hash_key(victim.plaintext)
            for _ in range(50):
                read_at = time.monotonic()
                assert await verdict(client, admin, victim.plaintext) == "valid"
                if runtime.cache.get(key_hash)[0]:
                    break
            await asyncio.sleep(0.5)

            proxy.reset()
            await self.wait_lost(runtime)
            await revoke_directly(make_settings, pg_url, victim.row.id)
            revoked_at = time.monotonic()
            # Served from the cache while its entry is fresh (stale by design,
            # within the bound): never a 503 for a key verified before.
            answers = []
            while (asked := time.monotonic()) < read_at + self.TTL - 0.2:
                answers.append(await verdict(client, admin, victim.plaintext))
                if gap == "shorter than the TTL" and asked > revoked_at + 0.3:
                    break
                await asyncio.sleep(0.05)
            assert answers
            assert set(answers) == {"valid"}

            if gap == "shorter than the TTL":
                await proxy.start()
            else:
                # The entry has expired: the database is needed, and gone.
                await asyncio.sleep(read_at + self.TTL + 0.05 - time.monotonic())
                assert await verdict(client, admin, victim.plaintext) == "503"
                await proxy.start()
            # Never valid again after the TTL from the revocation; revoked
            # as soon as the database answers.
            deadline = revoked_at + self.TTL + 5
            while (answer := await verdict(client, admin, victim.plaintext)) != "revoked":
                now = time.monotonic()
                late = answer == "valid" and now >= revoked_at + self.TTL
                assert not late, f"valid {now - revoked_at:.2f} s after the revocation"
                assert now < deadline, "not refused 5 s after the TTL"
                await asyncio.sleep(0.05)


async def test_two_serving_processes_through_a_reset_then_a_black_hole(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    """The claims above with two real ``keyhouse serve`` processes, requests at once."""
    ttl = 3.0
    app = create_app(make_settings(database_url=pg_url))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        account = await create_account(runtime)
        victim = await create_key(runtime, account.account_id)
        admin = bearer(runtime.admin_tokens.first)
    real = make_url(pg_url)
    async with tcp_proxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        settings = make_settings(database_url=proxied(pg_url, proxy))
        # Started in a thread: served() waits with time.sleep, and the proxy
        # forwards on this thread's event loop.
        servers = served(settings, 2, KEYHOUSE_CACHE_TTL_SECONDS=str(ttl))
        urls = await asyncio.to_thread(servers.__enter__)
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        try:
            read_at = time.monotonic()
            for client in clients:
                assert await verdict(client, admin, victim.plaintext) == "valid"
            read_until = time.monotonic()  # the last entry was read before this
            await asyncio.sleep(0.5)

            proxy.reset()
            await revoke_directly(make_settings, pg_url, victim.row.id)
            revoked_at = time.monotonic()
            answers: list[str] = []

            async def answered_in_time(client: httpx.AsyncClient) -> str | None:
                """The verdict, if it came back before the earliest expiry of the entry
                (read after ``read_at``): on a loaded machine a request sent just before
                may be answered after it, from the database (503), as it should be."""
                answer = await verdict(client, admin, victim.plaintext)
                return answer if time.monotonic() < read_at + ttl else None

            while time.monotonic() < read_at + ttl - 0.3:
                got = await asyncio.gather(*(answered_in_time(client) for client in clients))
                answers += [answer for answer in got if answer is not None]
                await asyncio.sleep(0.05)
            assert answers
            assert set(answers) == {"valid"}

            # Every entry has expired: now the database is needed.
            await asyncio.sleep(read_until + ttl + 0.05 - time.monotonic())
            proxy.black_hole()
            await proxy.start()

            async def timed_status(call: Awaitable[httpx.Response]) -> tuple[int, float]:
                response, took = await timed(call)
                return response.status_code, took

            calls = [
                call
                for client in clients
                for call in (
                    *(client.get("/keys", headers=account.auth) for _ in range(5)),
                    client.post("/verify", headers=admin, json={"key": victim.plaintext}),
                    client.get("/readyz"),
                )
            ]
            results = await asyncio.gather(*(timed_status(call) for call in calls))
            assert {status for status, _ in results} == {503}
            slowest = max(took for _, took in results)
            assert slowest <= BOUND + SLACK, f"slowest of {len(results)}: {slowest:.2f} s"

            proxy.restore()
            for client in clients:
                deadline = time.monotonic() + 10
                while (answer := await verdict(client, admin, victim.plaintext)) != "revoked":
                    assert answer != "valid", f"valid {time.monotonic() - revoked_at:.2f} s after"
                    assert time.monotonic() < deadline, "not back within 10 s"
                    await asyncio.sleep(0.05)
        finally:
            for client in clients:
                await client.aclose()
            proxy.restore()
            await asyncio.to_thread(servers.__exit__, None, None, None)
