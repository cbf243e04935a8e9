"""Monthly quota: 402 usage_limit_exceeded, exact under concurrency, kept across restarts."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable

import httpx

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer
from tests.limits.helpers import account_on_plan


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    return dict(Counter(r.status_code for r in responses))


class TestMonthlyQuota:
    async def test_exact_under_concurrency_in_one_process(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=120)
        responses = await asyncio.gather(
            *(client.get("/keys", headers=acc.auth) for _ in range(300))
        )
        assert statuses(responses) == {200: 120, 402: 180}
        refused = next(r for r in responses if r.status_code == 402)
        error = refused.json()["error"]
        assert error["code"] == "usage_limit_exceeded"
        assert "resets at" in error["fix"]
        assert refused.json()["trackingId"] == refused.headers["x-tracking-id"]

    async def test_refused_calls_use_nothing_and_account_stays_visible(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=3)
        codes = [
            (await client.get("/environments", headers=acc.auth)).status_code for _ in range(6)
        ]
        assert codes == [200, 200, 200, 402, 402, 402]
        for path in ["/keys", "/events"]:
            resp = await client.get(path, headers=acc.auth)
            assert (resp.status_code, resp.json()["error"]["code"]) == (
                402,
                "usage_limit_exceeded",
            )
        mine = await client.get("/account", headers=acc.auth)
        assert mine.status_code == 200
        assert mine.json()["usage"]["requests"] == 3
        assert mine.json()["limits"]["monthlyRequests"] == 3
        assert mine.json()["usage"]["resetsAt"].endswith("-01T00:00:00.000Z")

    async def test_verifications_count_and_report_usage_exceeded(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=3)
        admin = bearer(runtime.admin_tokens.first)
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        codes = []
        for _ in range(3):
            body = (await client.post("/verify", headers=admin, json={"key": acc.key})).json()
            codes.append((body["valid"], body["code"], body["usage"]["requests"]))
        assert codes == [(True, "valid", 2), (True, "valid", 3), (False, "usage_exceeded", 3)]
        assert (await client.get("/keys", headers=acc.auth)).status_code == 402

    async def test_raising_the_limit_takes_effect_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=1)
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        assert (await client.get("/keys", headers=acc.auth)).status_code == 402
        admin = bearer(runtime.admin_tokens.first)
        patched = await client.patch(
            f"/admin/accounts/{acc.account_id}",
            headers=admin,
            json={"limits": {"monthlyRequests": None}},
        )
        assert patched.status_code == 200
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200

    async def test_counts_survive_a_restart(self, make_settings: Callable[..., Settings]) -> None:
        settings = make_settings()

        async def calls(
            count: int, acc: AccountWithKey | None = None
        ) -> tuple[AccountWithKey, list[int]]:
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                if acc is None:
                    acc = await account_on_plan(app.state.runtime, monthlyRequests=5)
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                    got = [
                        (await client.get("/keys", headers=acc.auth)).status_code
                        for _ in range(count)
                    ]
            return acc, got

        acc, first = await calls(4)
        assert first == [200] * 4
        # A new process: the 4 counted before are remembered, so 1 is left.
        _, second = await calls(2, acc)
        assert second == [200, 402]

    async def test_database_mode_is_exact_too(self, make_settings: Callable[..., Settings]) -> None:
        # What each of several workers without Redis does: take from the database.
        app = create_app(make_settings(workers=2))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            assert runtime.limiter.mode == "database"
            acc = await account_on_plan(runtime, monthlyRequests=120)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                responses = await asyncio.gather(
                    *(client.get("/keys", headers=acc.auth) for _ in range(300))
                )
                mine = (await client.get("/account", headers=acc.auth)).json()
        assert statuses(responses) == {200: 120, 402: 180}
        assert mine["usage"]["requests"] == 120
