"""A call answered with a 5xx uses no quota and no token (issue 12, part H).

The metering step gives back what it took when the error leaves it: a bug
in a handler (500), the database failing inside the handler (503), on the
routes the pipeline calls directly (``GET /keys``) and on those FastAPI
resolves (``POST /environments``), counted in memory or in Redis.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import make_url

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.environments.service import EnvironmentService
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, expect_error
from tests.limits.helpers import account_on_plan
from tests.proxy import Proxy, tcp_proxy

PLAN = {"monthlyRequests": 5, "ratePerSecond": 1, "burst": 3}


async def broken(*args: Any, **kwargs: Any) -> Any:
    raise RuntimeError("a bug")


async def usage(client: httpx.AsyncClient, acc: AccountWithKey) -> int:
    mine = await client.get("/account", headers=acc.auth)
    assert mine.status_code == 200
    requests: int = mine.json()["usage"]["requests"]
    return requests


class TestBug:
    async def test_a_500_on_a_direct_route_gives_back_quota_and_token(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        acc = await account_on_plan(runtime, **PLAN)
        with monkeypatch.context() as patch:
            patch.setattr(KeyService, "list_objects", broken)
            expect_error(await client.get("/keys", headers=acc.auth), 500, "internal_error")
        ok = await client.get("/keys", headers=acc.auth)
        assert ok.status_code == 200
        # 3 tokens: one for this call, none kept by the failed one.
        assert ok.headers["ratelimit-remaining"] == "2"
        assert await usage(client, acc) == 1

    async def test_a_500_on_a_framework_route_gives_back_quota_and_token(
        self, client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        acc = await account_on_plan(runtime, **PLAN)
        with monkeypatch.context() as patch:
            patch.setattr(EnvironmentService, "create", broken)
            failed = await client.post("/environments", headers=acc.auth, json={"name": "x"})
            expect_error(failed, 500, "internal_error")
        ok = await client.post("/environments", headers=acc.auth, json={"name": "x"})
        assert ok.status_code == 201
        assert ok.headers["ratelimit-remaining"] == "2"
        assert await usage(client, acc) == 1

    async def test_a_4xx_still_counts(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await account_on_plan(runtime, **PLAN)
        expect_error(await client.get("/keys/key_nope", headers=acc.auth), 404, "not_found")
        assert await usage(client, acc) == 1


@pytest.fixture
async def proxied(settings: Settings) -> AsyncIterator[tuple[Proxy, Callable[..., Settings]]]:
    """A TCP proxy in front of the test's PostgreSQL, and settings that go through it."""
    assert settings.database_url is not None
    url = make_url(settings.database_url)
    assert url.host is not None
    assert url.port is not None
    async with tcp_proxy(url.host, url.port) as proxy:
        through = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)

        def make(**overrides: Any) -> Settings:
            return settings.model_copy(update={"database_url": through, **overrides})

        yield proxy, make


@pytest.mark.postgresql_only
@pytest.mark.parametrize("counted_in", ["memory", "redis"])
async def test_the_database_failing_inside_the_handler_uses_nothing(
    proxied: tuple[Proxy, Callable[..., Settings]],
    request: pytest.FixtureRequest,
    counted_in: str,
) -> None:
    proxy, make = proxied
    redis_url = request.getfixturevalue("redis_url") if counted_in == "redis" else None
    app = create_app(make(redis_url=redis_url))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        acc = await account_on_plan(runtime, **PLAN)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/keys", headers=acc.auth)).status_code == 200
            proxy.cut()  # the key stays in the cache: the handler's query fails
            failed = await client.get("/keys", headers=acc.auth)
            expect_error(failed, 503, "service_unavailable")
            await proxy.start()
            ok = await client.get("/keys", headers=acc.auth)
            assert ok.status_code == 200
            assert ok.headers["ratelimit-remaining"] == "1"
            assert await usage(client, acc) == 2
