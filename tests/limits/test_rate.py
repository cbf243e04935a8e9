"""Rate limits: a token bucket per key, 429 with Retry-After and RateLimit-* headers."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from keyhouse.runtime import Runtime
from tests.factories import bearer, create_key
from tests.limits.helpers import account_on_plan


class TestRateLimit:
    async def test_a_burst_is_cut_at_the_bucket(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=5, burst=5)
        responses = await asyncio.gather(
            *(client.get("/keys", headers=acc.auth) for _ in range(25))
        )
        counts = Counter(r.status_code for r in responses)
        assert set(counts) <= {200, 429}
        # 5 from the full bucket, plus what refills (5/s) while the burst runs.
        assert 5 <= counts[200] <= 12
        refused = next(r for r in responses if r.status_code == 429)
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.headers["ratelimit-limit"] == "5"
        assert refused.headers["ratelimit-remaining"] == "0"

    async def test_headers_on_every_admitted_response(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=2, burst=10)
        first = await client.get("/keys", headers=acc.auth)
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "10"
        assert int(first.headers["ratelimit-remaining"]) in {8, 9}
        assert int(first.headers["ratelimit-reset"]) >= 1

    async def test_no_rate_headers_without_a_rate_limit(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=100)
        resp = await client.get("/keys", headers=acc.auth)
        assert "ratelimit-limit" not in resp.headers

    async def test_buckets_are_per_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=2)
        other = await create_key(runtime, acc.account_id)
        codes = [(await client.get("/keys", headers=acc.auth)).status_code for _ in range(3)]
        assert codes[:2] == [200, 200]
        assert codes[2] == 429
        assert (await client.get("/keys", headers=bearer(other.plaintext))).status_code == 200

    async def test_refused_requests_use_no_quota(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=1, monthlyRequests=100)
        codes = [(await client.get("/keys", headers=acc.auth)).status_code for _ in range(4)]
        assert codes.count(200) >= 1
        mine = (await client.get("/account", headers=acc.auth)).json()
        assert mine["usage"]["requests"] == codes.count(200)

    async def test_verify_reports_rate_limited(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=2)
        admin = bearer(runtime.admin_tokens.first)
        bodies = [
            (await client.post("/verify", headers=admin, json={"key": acc.key})).json()
            for _ in range(3)
        ]
        assert [b["code"] for b in bodies[:2]] == ["valid", "valid"]
        assert bodies[0]["ratelimit"]["limit"] == 2
        assert bodies[2]["code"] == "rate_limited"
        assert bodies[2]["valid"] is False
        assert bodies[2]["ratelimit"]["remaining"] == 0
