"""The way out is never locked (issue 12, part F).

An account over its monthly quota (402), or rate limited (429), can still
revoke a key and roll one without grace: these answer a leak, so they are
never refused for quota or rate, and they use none of it. A roll with grace
is an ordinary metered call.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import create_key, expect_error
from tests.limits.conftest import served
from tests.limits.helpers import account_on_plan, prepared, stored_usage


async def usage(client: httpx.AsyncClient, auth: dict[str, str]) -> int:
    mine = await client.get("/account", headers=auth)
    assert mine.status_code == 200
    requests: int = mine.json()["usage"]["requests"]
    return requests


class TestOverQuota:
    async def test_revoke_and_roll_without_grace_pass_and_use_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=2)
        leaked = await create_key(runtime, acc.account_id, key_type="public")
        other = await create_key(runtime, acc.account_id)
        for _ in range(2):
            assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        expect_error(await client.get("/keys", headers=acc.auth), 402, "usage_limit_exceeded")

        revoked = await client.post(f"/keys/{leaked.row.id}/revoke", headers=acc.auth)
        assert revoked.status_code == 200
        assert revoked.json()["revoked"] is True
        rolled = await client.post(
            f"/keys/{other.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
        )
        assert rolled.status_code == 201
        assert "ratelimit-limit" not in revoked.headers
        # A roll with grace leaves the old key working: an ordinary call, refused.
        graced = await client.post(
            f"/keys/{rolled.json()['id']}/roll", headers=acc.auth, json={"expiresInSeconds": 60}
        )
        expect_error(graced, 402, "usage_limit_exceeded")
        assert await usage(client, acc.auth) == 2


class TestRateLimited:
    async def test_revoke_and_roll_without_grace_pass_and_take_no_token(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=1)
        leaked = await create_key(runtime, acc.account_id)
        other = await create_key(runtime, acc.account_id)
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        expect_error(await client.get("/keys", headers=acc.auth), 429, "rate_limited")
        graced = await client.post(f"/keys/{other.row.id}/roll", headers=acc.auth)
        expect_error(graced, 429, "rate_limited")

        revoked = await client.post(f"/keys/{leaked.row.id}/revoke", headers=acc.auth)
        assert revoked.status_code == 200
        rolled = await client.post(
            f"/keys/{other.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
        )
        assert rolled.status_code == 201
        assert await usage(client, acc.auth) == 1


async def test_across_processes_the_way_out_stays_open(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    # Two servers sharing Redis; the account is over its quota. Revokes and
    # rolls without grace, at once on both servers, all pass and count nothing.
    settings = make_settings()
    acc = await prepared(settings, monthlyRequests=3)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        keys = [(await create_key(app.state.runtime, acc.account_id)).row.id for _ in range(8)]
    with served(settings, 2, KEYHOUSE_REDIS_URL=redis_url) as urls:
        async with httpx.AsyncClient(timeout=30) as client:
            for i in range(3):
                ok = await client.get(f"{urls[i % 2]}/keys", headers=acc.auth)
                assert ok.status_code == 200
            over = await client.get(f"{urls[0]}/keys", headers=acc.auth)
            expect_error(over, 402, "usage_limit_exceeded")
            answers = await asyncio.gather(
                *(
                    client.post(f"{urls[i % 2]}/keys/{key_id}/revoke", headers=acc.auth)
                    for i, key_id in enumerate(keys[:4])
                ),
                *(
                    client.post(
                        f"{urls[i % 2]}/keys/{key_id}/roll",
                        headers=acc.auth,
                        json={"expiresInSeconds": 0},
                    )
                    for i, key_id in enumerate(keys[4:])
                ),
            )
            assert Counter(r.status_code for r in answers) == {200: 4, 201: 4}
            mine = await client.get(f"{urls[1]}/account", headers=acc.auth)
            assert mine.json()["usage"]["requests"] == 3
    assert await stored_usage(settings, acc.account_id) == 3
