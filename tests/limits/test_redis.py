"""Limits across processes: Redis (one Lua script), or the database without it.

Real ``keyhouse serve`` processes share one data directory; Redis is the
machine's, on a database number of its own.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx
import redis

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey
from tests.limits.conftest import REDIS_DB, REDIS_HOST, REDIS_PORT, served
from tests.limits.helpers import account_on_plan, prepared
from tests.proxy import tcp_proxy


async def hammer(urls: list[str], acc: AccountWithKey, count: int) -> Counter[int]:
    # 300 requests at once from the client, over 16 connections: enough to
    # race, without saturating the 2 cores so far that a Redis reply waits
    # past the 100 ms timeout (which keyhouse would take for an outage).
    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        responses = await asyncio.gather(
            *(client.get(f"{urls[i % len(urls)]}/keys", headers=acc.auth) for i in range(count))
        )
    return Counter(r.status_code for r in responses)


class TestAcrossProcesses:
    async def test_two_processes_sharing_redis_enforce_one_quota(
        self, make_settings: Callable[..., Settings], redis_url: str
    ) -> None:
        settings = make_settings()
        acc = await prepared(settings, monthlyRequests=120)
        with served(settings, 2, KEYHOUSE_REDIS_URL=redis_url) as urls:
            counts = await hammer(urls, acc, 300)
        assert counts == {200: 120, 402: 180}

    async def test_two_processes_without_redis_count_in_the_database(
        self, make_settings: Callable[..., Settings]
    ) -> None:
        settings = make_settings()
        acc = await prepared(settings, monthlyRequests=120)
        with served(settings, 2, KEYHOUSE_WORKERS="2") as urls:
            counts = await hammer(urls, acc, 300)
        assert counts == {200: 120, 402: 180}


class TestRedis:
    async def test_every_key_it_writes_has_a_ttl(
        self, make_settings: Callable[..., Settings], redis_url: str
    ) -> None:
        app = create_app(make_settings(redis_url=redis_url))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            assert runtime.limiter.mode == "redis"
            acc = await account_on_plan(runtime, ratePerSecond=5, burst=5, monthlyRequests=50)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for _ in range(3):
                    assert (await client.get("/keys", headers=acc.auth)).status_code == 200
                mine = (await client.get("/account", headers=acc.auth)).json()
        assert mine["usage"]["requests"] == 3
        client_ = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
        names = [name.decode() if isinstance(name, bytes) else name for name in client_.keys("*")]
        kinds = Counter(name.split(":")[1] for name in names)
        # The key's bucket, the account's counter, the answer to each admitted
        # request (kept 10 s: a request that timed out and is asked again is
        # counted once) and, once the watch has run, Redis's epoch.
        assert (kinds.pop("bucket"), kinds.pop("admitted"), kinds.pop("op")) == (1, 1, 3)
        assert set(kinds) <= {"epoch"}
        assert all(client_.ttl(name) > 0 for name in names)
        assert all(0 < client_.pttl(name) <= 10_000 for name in names if ":op:" in name)
        client_.close()

    async def test_redis_cut_mid_run_gives_no_500(
        self, make_settings: Callable[..., Settings], redis_url: str
    ) -> None:
        async with tcp_proxy(REDIS_HOST, REDIS_PORT) as proxy:
            url = f"redis://127.0.0.1:{proxy.port}/{REDIS_DB}"
            app = create_app(make_settings(redis_url=url))
            async with app.router.lifespan_context(app):
                runtime: Runtime = app.state.runtime
                acc = await account_on_plan(runtime, monthlyRequests=1000)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    before = [
                        (await client.get("/keys", headers=acc.auth)).status_code for _ in range(5)
                    ]
                    ready = (await client.get("/readyz")).json()
                    assert ready["redis"] == "ok"
                    proxy.cut()
                    after = await asyncio.gather(
                        *(client.get("/keys", headers=acc.auth) for _ in range(50))
                    )
                    ready_after = await client.get("/readyz")
        assert before == [200] * 5
        assert Counter(r.status_code for r in after) == {200: 50}
        assert ready_after.status_code == 200
        assert ready_after.json()["redis"].startswith("unavailable")
