"""``GET /keys``'s fast path answers exactly as the route would, or leaves it to the route.

Each case is asked twice on the same data: once as it comes (the fast path
answers what it can) and once with the fast path switched off (the FastAPI
route answers everything). Status, headers and body must match, apart from
the tracking id and the moment of the caller's own use (``lastUsedAt``).
Bodies are compared with every key string replaced by a digest, so a
failure never prints a key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from starlette.types import Receive, Scope, Send

import keyhouse.app
from keyhouse.app import create_app
from keyhouse.keys.fastpath import try_fast_list
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_error,
    set_expiry,
)
from tests.limits.helpers import account_on_plan

FastList = Callable[[Runtime, Scope, Receive, Send], Awaitable[bool]]


class Switch:
    """Turns the fast path on and off, and records whether it answered."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.enabled = True
        self.answered: list[bool] = []
        monkeypatch.setattr(keyhouse.app, "try_fast_list", self._try)

    async def _try(self, runtime: Runtime, scope: Scope, receive: Receive, send: Send) -> bool:
        answered = self.enabled and await try_fast_list(runtime, scope, receive, send)
        self.answered.append(answered)
        return answered


@pytest.fixture
def switch(monkeypatch: pytest.MonkeyPatch) -> Switch:
    return Switch(monkeypatch)


def comparable(resp: httpx.Response) -> tuple[int, dict[str, str], Any]:
    """What must match between the two answers, with no key string in it."""
    headers = {k: v for k, v in resp.headers.items() if k not in {"x-tracking-id"}}
    body = resp.json()
    body.pop("trackingId", None)
    for obj in body.get("keys", []):
        obj["key"] = hashlib.sha256(obj["key"].encode()).hexdigest()[:16]
        obj.pop("lastUsedAt", None)  # the caller's own use moves between the two asks
    return resp.status_code, headers, body


async def both_ways(
    client: httpx.AsyncClient, switch: Switch, url: str, headers: dict[str, str]
) -> tuple[httpx.Response, bool]:
    """The answer with the fast path on (returned) and off; asserts they match."""
    switch.enabled = True
    fast = await client.get(url, headers=headers)
    answered = switch.answered[-1]
    switch.enabled = False
    routed = await client.get(url, headers=headers)
    assert comparable(fast) == comparable(routed)
    return fast, answered


class TestSameAnswer:
    async def test_an_account_wide_secret_key_is_answered_fast(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        await create_key(runtime, acc.account_id, key_type="public", environment_id=env.id)
        await create_key(runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(days=1))
        revoked = await create_key(runtime, acc.account_id, name="gone")
        await client.post(f"/keys/{revoked.row.id}/revoke", headers=acc.auth)
        resp, answered = await both_ways(client, switch, "/keys", acc.auth)
        assert answered
        assert resp.status_code == 200
        assert len(resp.json()["keys"]) == 4
        mine = next(k for k in resp.json()["keys"] if k["id"] == acc.key_id)
        assert "lastUsedAt" in mine

    async def test_an_environment_key_sees_its_environment_only(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        await create_key(runtime, acc.account_id)
        resp, answered = await both_ways(client, switch, "/keys", bearer(scoped.plaintext))
        assert answered
        assert [k["environmentId"] for k in resp.json()["keys"]] == [env.id]

    async def test_masked_listings_match(
        self, make_settings: Callable[..., Any], switch: Switch
    ) -> None:
        app = create_app(make_settings(list_reveals_keys=False))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                acc = await create_account(runtime)
                resp, answered = await both_ways(client, switch, "/keys", acc.auth)
        assert answered
        assert resp.json()["keys"][0]["key"] != acc.key

    @pytest.mark.parametrize("url", ["/keys?keyType=secret", "/keys?revoked=false", "/keys?x="])
    async def test_a_query_goes_to_the_route(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch, url: str
    ) -> None:
        acc = await create_account(runtime)
        resp, answered = await both_ways(client, switch, url, acc.auth)
        assert not answered
        assert resp.status_code in {200, 400}


class TestLeftToTheRoute:
    async def test_no_or_bad_credentials(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await create_account(runtime)
        cases = [
            ({}, 401, "missing_api_key"),
            ({"Authorization": "Basic abc"}, 401, "missing_api_key"),
            ({"Authorization": "Bearer"}, 401, "missing_api_key"),
            (bearer(acc.key[:-1] + ("A" if acc.key[-1] != "A" else "B")), 401, "malformed_api_key"),
            (bearer("sk_not_a_key_of_ours_at_all_000000"), 401, "invalid_api_key"),
            (bearer("x" * 2000), 401, "invalid_api_key"),
        ]
        for headers, status, code in cases:
            resp, answered = await both_ways(client, switch, "/keys", headers)
            assert not answered
            expect_error(resp, status, code)

    async def test_a_revoked_key(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await create_account(runtime)
        other = await create_key(runtime, acc.account_id)
        await client.post(f"/keys/{other.row.id}/revoke", headers=acc.auth)
        resp, answered = await both_ways(client, switch, "/keys", bearer(other.plaintext))
        assert not answered
        expect_error(resp, 401, "revoked_api_key")

    async def test_an_expired_key_is_recorded_once(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        # The fast path's lookup finds the key expired and records key.expired;
        # the route, asked next, must answer 401 without recording it again.
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        await set_expiry(runtime, old.row.id, datetime.now(UTC) - timedelta(seconds=1))
        resp, answered = await both_ways(client, switch, "/keys", bearer(old.plaintext))
        assert not answered
        expect_error(resp, 401, "expired_api_key")
        events = (await client.get("/events?limit=100", headers=acc.auth)).json()["events"]
        assert [e["keyId"] for e in events if e["type"] == "key.expired"] == [old.row.id]

    async def test_a_public_key(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await create_account(runtime)
        public = await create_key(runtime, acc.account_id, key_type="public")
        resp, answered = await both_ways(client, switch, "/keys", bearer(public.plaintext))
        assert not answered
        expect_error(resp, 403, "insufficient_permissions")


class TestMetering:
    async def test_each_call_counts_once_and_the_refusal_is_the_routes(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=3)
        codes = [(await client.get("/keys", headers=acc.auth)).status_code for _ in range(3)]
        assert codes == [200, 200, 200]
        assert switch.answered == [True, True, True]
        refused = await client.get("/keys", headers=acc.auth)
        expect_error(refused, 402, "usage_limit_exceeded")
        assert switch.answered[-1] is False
        mine = (await client.get("/account", headers=acc.auth)).json()
        assert mine["usage"]["requests"] == 3

    async def test_rate_headers_and_429(
        self, client: httpx.AsyncClient, runtime: Runtime, switch: Switch
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=2)
        first = await client.get("/keys", headers=acc.auth)
        second = await client.get("/keys", headers=acc.auth)
        third = await client.get("/keys", headers=acc.auth)
        assert switch.answered == [True, True, False]
        assert first.headers["ratelimit-limit"] == "2"
        assert first.headers["ratelimit-remaining"] == "1"
        assert second.headers["ratelimit-remaining"] == "0"
        expect_error(third, 429, "rate_limited")
        assert int(third.headers["retry-after"]) >= 1
        assert third.headers["ratelimit-remaining"] == "0"
