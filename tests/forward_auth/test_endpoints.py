"""``/forward-auth`` in-process (ASGI), on SQLite and PostgreSQL.

What a proxy relies on: the status and code, ``X-Keyhouse-Status`` and
``X-Keyhouse-Error`` on every answer (nginx's ``auth_request`` keeps neither
the status nor the body of a refusal), the identity headers, the proxy's own
token, metering as an account-API call, and bad input answered with the
envelope. The live test with a real nginx is ``test_nginx.py``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_error,
)
from tests.limits.helpers import account_on_plan

VERIFY_TOKEN = "kh_verify_" + secrets.token_urlsafe(32)
PROXY = {"X-Keyhouse-Forward-Token": VERIFY_TOKEN}
IDENTITY = {
    "x-keyhouse-account-id",
    "x-keyhouse-key-id",
    "x-keyhouse-key-type",
    "x-keyhouse-environment-id",
}


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(verify_tokens=VERIFY_TOKEN)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A client of an app on ``settings`` (for settings the ``client`` fixture lacks)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, app.state.runtime


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope, and the two headers a proxy rebuilds it from."""
    __tracebackhide__ = True
    body = expect_error(response, status, code)
    assert response.headers["x-keyhouse-status"] == str(status)
    assert json.loads(response.headers["x-keyhouse-error"]) == body
    assert not IDENTITY & set(response.headers)
    return body


class TestPasses:
    async def test_a_secret_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
        assert resp.status_code == 200
        assert resp.headers["x-keyhouse-status"] == "200"
        assert resp.headers["x-keyhouse-account-id"] == acc.account_id
        assert resp.headers["x-keyhouse-key-id"] == acc.key_id
        assert resp.headers["x-keyhouse-key-type"] == "secret"
        assert "x-keyhouse-environment-id" not in resp.headers
        assert "x-keyhouse-error" not in resp.headers
        assert resp.json() == {
            "accountId": acc.account_id,
            "keyId": acc.key_id,
            "keyType": "secret",
        }

    async def test_a_public_key_scoped_to_an_environment(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        key = await create_key(runtime, acc.account_id, key_type="public", environment_id=env.id)
        resp = await client.get("/forward-auth", headers={**PROXY, **bearer(key.plaintext)})
        assert resp.status_code == 200
        assert resp.headers["x-keyhouse-key-type"] == "public"
        assert resp.headers["x-keyhouse-key-id"] == key.row.id
        assert resp.headers["x-keyhouse-environment-id"] == env.id
        assert resp.json()["environmentId"] == env.id

    @pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"])
    async def test_every_method(
        self, client: httpx.AsyncClient, runtime: Runtime, method: str
    ) -> None:
        """Proxies ask with the original request's method (Envoy does)."""
        acc = await create_account(runtime)
        resp = await client.request(method, "/forward-auth", headers={**PROXY, **acc.auth})
        assert resp.status_code == 200
        assert resp.headers["x-keyhouse-key-id"] == acc.key_id
        assert resp.headers["x-keyhouse-status"] == "200"

    async def test_an_admin_token_as_the_proxys(
        self, client: httpx.AsyncClient, runtime: Runtime, settings: Settings
    ) -> None:
        assert settings.admin_tokens is not None or runtime.admin_tokens.first
        acc = await create_account(runtime)
        proxy = {"X-Keyhouse-Forward-Token": runtime.admin_tokens.first}
        resp = await client.get("/forward-auth", headers={**proxy, **acc.auth})
        assert resp.status_code == 200

    async def test_the_original_requests_uri_is_not_read(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """nginx sends the original URI in X-Original-URI; its query is not /forward-auth's."""
        acc = await create_account(runtime)
        original = {
            "X-Original-URI": f"/items?limit=5&unknown=1&api_key={acc.key}",
            "X-Forwarded-Uri": "/items?x=1",
            "X-Original-Method": "POST",
        }
        resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth, **original})
        assert resp.status_code == 200


class TestRefused:
    async def test_no_proxy_token(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        body = refused(
            await client.get("/forward-auth", headers=acc.auth), 401, "forward_token_required"
        )
        assert "X-Keyhouse-Forward-Token" in body["error"]["fix"]

    async def test_a_wrong_proxy_token(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        wrong = {"X-Keyhouse-Forward-Token": "kh_verify_" + secrets.token_urlsafe(32)}
        refused(
            await client.get("/forward-auth", headers={**wrong, **acc.auth}),
            401,
            "invalid_forward_token",
        )
        # A key is not a proxy token either.
        as_token = {"X-Keyhouse-Forward-Token": acc.key}
        resp = await client.get("/forward-auth", headers={**as_token, **acc.auth})
        refused(resp, 401, "invalid_forward_token")
        assert acc.key not in resp.text

    async def test_proxy_token_failures_are_not_key_guesses(
        self, make_settings: Callable[..., Settings]
    ) -> None:
        """Nothing about the key is looked at or counted: no quota, no failed-auth count."""
        settings = make_settings(verify_tokens=VERIFY_TOKEN, auth_failures_per_minute=1)
        async with served(settings) as (client, runtime):
            acc = await account_on_plan(runtime, monthlyRequests=1)
            wrong = {"X-Keyhouse-Forward-Token": "kh_verify_" + secrets.token_urlsafe(32)}
            for _ in range(3):
                resp = await client.get("/forward-auth", headers={**wrong, **bearer("sk_nope")})
                refused(resp, 401, "invalid_forward_token")
                resp = await client.get("/forward-auth", headers=acc.auth)
                refused(resp, 401, "forward_token_required")
            # The address's first failed key: 401, not the throttle's 429.
            resp = await client.get("/forward-auth", headers={**PROXY, **bearer("sk_nope")})
            refused(resp, 401, "invalid_api_key")
            # The quota of 1 is still whole.
            resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
            assert resp.status_code == 200

    @pytest.mark.parametrize(
        ("headers", "code"),
        [
            ({}, "missing_api_key"),
            ({"Authorization": "Basic dXNlcjpwYXNz"}, "missing_api_key"),
            ({"Authorization": "Bearer sk_" + "A" * 49}, "malformed_api_key"),
            ({"Authorization": "Bearer not-a-key-of-anyone-here"}, "invalid_api_key"),
        ],
    )
    async def test_a_bad_key(
        self, client: httpx.AsyncClient, headers: dict[str, str], code: str
    ) -> None:
        refused(await client.get("/forward-auth", headers={**PROXY, **headers}), 401, code)

    async def test_a_revoked_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        other = await create_key(runtime, acc.account_id)
        revoke = await client.post(
            f"/keys/{other.row.id}/revoke", headers=acc.auth, params={"force": "true"}
        )
        assert revoke.status_code == 200
        resp = await client.get("/forward-auth", headers={**PROXY, **bearer(other.plaintext)})
        refused(resp, 401, "revoked_api_key")

    async def test_a_verify_token_as_the_key(self, make_settings: Callable[..., Settings]) -> None:
        """The client's key is no place for a token: 401 as any string that does not pass,
        and a failed guess. A 403 "A verify token can only call POST /verify" told an
        outside client that the string it held was the proxy's token (reviewer r14)."""
        settings = make_settings(verify_tokens=VERIFY_TOKEN, auth_failures_per_minute=2)
        async with served(settings) as (client, _):
            for _ in range(2):
                resp = await client.get("/forward-auth", headers={**PROXY, **bearer(VERIFY_TOKEN)})
                body = refused(resp, 401, "invalid_api_key")
                assert "verify" not in body["error"]["message"].lower()
                assert VERIFY_TOKEN not in resp.text
            resp = await client.get("/forward-auth", headers={**PROXY, **bearer(VERIFY_TOKEN)})
            refused(resp, 429, "rate_limited")


class TestMetered:
    async def test_each_call_counts_once_and_a_refused_one_not_at_all(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=3)
        statuses = [
            (await client.get("/forward-auth", headers={**PROXY, **acc.auth})).status_code
            for _ in range(3)
        ]
        assert statuses == [200, 200, 200]
        for _ in range(2):
            resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
            body = refused(resp, 402, "usage_limit_exceeded")
            assert body["error"]["fix"]
        account = await client.get("/account", headers=acc.auth)
        assert account.json()["usage"]["requests"] == 3

    async def test_rate_limited(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=2)
        first = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
        assert first.status_code == 200
        assert first.headers["ratelimit-limit"] == "2"
        assert int(first.headers["ratelimit-remaining"]) in {0, 1}
        resp = first
        for _ in range(3):
            resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
            if resp.status_code == 429:
                break
        refused(resp, 429, "rate_limited")
        assert int(resp.headers["retry-after"]) >= 1
        assert resp.headers["ratelimit-remaining"] == "0"


class TestForwardAuthHeader:
    """``KEYHOUSE_FORWARD_AUTH_HEADER=X-Api-Key``: the raw key in that header."""

    @pytest.fixture
    def api_key_settings(self, make_settings: Callable[..., Settings]) -> Settings:
        return make_settings(verify_tokens=VERIFY_TOKEN, forward_auth_header="X-Api-Key")

    async def test_the_raw_key(self, api_key_settings: Settings) -> None:
        async with served(api_key_settings) as (client, runtime):
            acc = await create_account(runtime)
            resp = await client.get("/forward-auth", headers={**PROXY, "X-Api-Key": acc.key})
            assert resp.status_code == 200
            assert resp.headers["x-keyhouse-key-id"] == acc.key_id
            # Authorization: Bearer still works.
            resp = await client.get("/forward-auth", headers={**PROXY, **acc.auth})
            assert resp.status_code == 200

    async def test_ambiguous_or_empty(self, api_key_settings: Settings) -> None:
        async with served(api_key_settings) as (client, runtime):
            acc = await create_account(runtime)
            both = {**PROXY, **acc.auth, "X-Api-Key": acc.key}
            refused(await client.get("/forward-auth", headers=both), 400, "validation_error")
            twice = [*PROXY.items(), ("X-Api-Key", acc.key), ("X-Api-Key", "other-key-value-123")]
            resp = await client.get("/forward-auth", headers=twice)
            refused(resp, 400, "validation_error")
            assert acc.key not in resp.text
            empty = {**PROXY, "X-Api-Key": " "}
            refused(await client.get("/forward-auth", headers=empty), 401, "missing_api_key")
            wrong = {**PROXY, "X-Api-Key": "not-a-key-of-anyone-here"}
            refused(await client.get("/forward-auth", headers=wrong), 401, "invalid_api_key")

    async def test_not_read_without_the_setting(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.get("/forward-auth", headers={**PROXY, "X-Api-Key": acc.key})
        refused(resp, 401, "missing_api_key")

    def test_a_bad_setting(self, make_settings: Callable[..., Settings]) -> None:
        for bad in ["Authorization", "X Api Key", "X-Api-Key:", "x" * 65]:
            with pytest.raises(ValueError, match="header"):
                make_settings(forward_auth_header=bad)


class TestBadInput:
    """The envelope and X-Keyhouse-Status, never a 500, whoever refuses."""

    async def test_two_authorization_headers(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        headers = [*PROXY.items(), ("Authorization", f"Bearer {acc.key}"), *acc.auth.items()]
        resp = await client.get("/forward-auth", headers=headers)
        refused(resp, 400, "validation_error")
        assert acc.key not in resp.text

    async def test_two_proxy_tokens(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        headers = [*PROXY.items(), *PROXY.items(), *acc.auth.items()]
        refused(await client.get("/forward-auth", headers=headers), 400, "validation_error")

    async def test_a_huge_header(self, client: httpx.AsyncClient) -> None:
        resp = await client.get(
            "/forward-auth", headers={**PROXY, "Authorization": "Bearer " + "a" * 20_000}
        )
        refused(resp, 400, "validation_error")

    async def test_a_long_key(self, client: httpx.AsyncClient) -> None:
        resp = await client.get(
            "/forward-auth", headers={**PROXY, "Authorization": "Bearer " + "a" * 2000}
        )
        refused(resp, 401, "invalid_api_key")

    async def test_an_unknown_query_parameter(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.get("/forward-auth?limit=5", headers={**PROXY, **acc.auth})
        refused(resp, 400, "validation_error")

    async def test_a_body_that_is_not_json(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.post(
            "/forward-auth",
            headers={**PROXY, **acc.auth, "Content-Type": "text/plain"},
            content=b"hello",
        )
        refused(resp, 415, "unsupported_media_type")

    async def test_a_head_refusal_has_its_status(self, client: httpx.AsyncClient) -> None:
        resp = await client.head("/forward-auth", headers=PROXY)
        assert resp.status_code == 401
        assert resp.headers["x-keyhouse-status"] == "401"
        assert resp.content == b""

    async def test_a_path_under_it_has_its_status(self, client: httpx.AsyncClient) -> None:
        # A proxy configured with a trailing slash (or a longer path) learns the 404
        # from X-Keyhouse-Status too (reviewer r14: /forward-auth/ had none).
        for path in ["/forward-auth/", "/forward-auth/check", "/forward-auth//x"]:
            refused(await client.get(path, headers=PROXY), 404, "not_found")

    async def test_other_paths_carry_no_forward_auth_headers(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        for path in ["/keys", "/forward-authx", "/forward"]:
            resp = await client.get(path, headers=acc.auth)
            assert "x-keyhouse-status" not in resp.headers


class TestRestrictedKeys:
    """A restricted key (issue 15) passes a proxy only as its restrictions allow: the
    request the proxy asks about is the client's own, its address and its Origin."""

    async def restricted(
        self, client: httpx.AsyncClient, runtime: Runtime, **body: Any
    ) -> dict[str, str]:
        acc = await create_account(runtime)
        resp = await client.post("/keys", headers=acc.auth, json={"name": "restricted", **body})
        assert resp.status_code == 201, resp.text
        return bearer(resp.json()["key"])

    async def test_an_ip_allowlist_is_held(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        # httpx's ASGITransport calls from 127.0.0.1.
        elsewhere = await self.restricted(
            client, runtime, keyType="secret", restrictions={"ipAllowlist": ["203.0.113.0/24"]}
        )
        resp = await client.get("/forward-auth", headers={**PROXY, **elsewhere})
        refused(resp, 403, "ip_not_allowed")
        here = await self.restricted(
            client, runtime, keyType="secret", restrictions={"ipAllowlist": ["127.0.0.0/8"]}
        )
        assert (await client.get("/forward-auth", headers={**PROXY, **here})).status_code == 200

    async def test_allowed_origins_are_held_and_fail_closed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        key = await self.restricted(
            client,
            runtime,
            keyType="public",
            restrictions={"allowedOrigins": ["https://app.example.com"]},
        )
        ok = await client.get(
            "/forward-auth", headers={**PROXY, **key, "Origin": "https://app.example.com"}
        )
        assert ok.status_code == 200, ok.text
        other = await client.get(
            "/forward-auth", headers={**PROXY, **key, "Origin": "https://evil.example"}
        )
        refused(other, 403, "origin_not_allowed")
        refused(
            await client.get("/forward-auth", headers={**PROXY, **key}), 403, "origin_not_allowed"
        )
