"""keyhouse's own account API holds a key to its scopes, its IP allowlist and its
account's browser guard (issue 15 items 4 and 7), in the pipeline, before metering.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from keyhouse.keys.restrictions import BUILTIN_SCOPES
from keyhouse.openapi import _calls
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, expect_error, set_limits

# Every route of the account API and the built-in scope it needs.
ROUTES: list[tuple[str, str, str, dict[str, Any] | None]] = [
    ("GET", "/keys", "keys:read", None),
    ("GET", "/keys/{target}", "keys:read", None),
    ("POST", "/keys", "keys:write", {"name": "k", "keyType": "public", "scopes": []}),
    ("PATCH", "/keys/{target}", "keys:write", {"name": "renamed"}),
    ("POST", "/keys/{target}/roll", "keys:write", None),
    ("POST", "/keys/{target}/revoke", "keys:write", None),
    ("GET", "/environments", "environments:read", None),
    ("POST", "/environments", "environments:write", {"name": "staging"}),
    ("GET", "/events", "events:read", None),
    ("GET", "/account", "account:read", None),
]


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def key_with(
    client: httpx.AsyncClient, acc: AccountWithKey, **body: Any
) -> tuple[str, dict[str, str]]:
    resp = await client.post(
        "/keys", headers=acc.auth, json={"name": "restricted", "keyType": "secret", **body}
    )
    assert resp.status_code == 201, resp.text
    return resp.json()["id"], bearer(resp.json()["key"])


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    auth: dict[str, str],
    body: dict[str, Any] | None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    return await client.request(method, path, headers={**auth, **(headers or {})}, json=body)


async def test_every_account_route_names_its_scope(app: FastAPI) -> None:
    """The table above is every route the account's keys call, and each route has
    its scope as a dependency (``require_scope``), so none is forgotten."""
    found = set()
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
            continue
        if not isinstance(route, APIRoute):
            continue
        calls = _calls(route.dependant)
        if "get_secret_caller" not in calls:
            continue
        scopes = {
            name[len("require_scope[") : -1] for name in calls if name.startswith("require_scope[")
        }
        for method in route.methods or ():
            if method != "HEAD":
                assert len(scopes) == 1, f"{method} {route.path}: scopes {scopes}"
                found.add((method, route.path.replace("{key_id}", "{target}"), scopes.pop()))
    assert found == {(method, path, scope) for method, path, scope, _ in ROUTES}
    assert {scope for _, _, scope, _ in ROUTES} == set(BUILTIN_SCOPES)


class TestScopes:
    @pytest.mark.parametrize(("method", "path", "scope", "body"), ROUTES)
    async def test_the_routes_scope_is_needed(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        method: str,
        path: str,
        scope: str,
        body: dict[str, Any] | None,
    ) -> None:
        acc = await create_account(runtime)
        target, _ = await key_with(client, acc, scopes=[])
        path = path.format(target=target)
        others = sorted(set(BUILTIN_SCOPES) - {scope})
        _, without = await key_with(client, acc, scopes=others)
        error = expect_error(
            await call(client, method, path, without, body), 403, "insufficient_scope"
        )
        assert scope in error["error"]["message"]
        assert scope in error["error"]["fix"]
        _, with_it = await key_with(client, acc, scopes=[scope])
        passed = await call(client, method, path, with_it, body)
        assert passed.status_code < 300, passed.text
        # A wildcard of the resource grants it too.
        _, wildcard = await key_with(client, acc, scopes=[scope.split(":")[0] + ":*"])
        if method == "GET":
            assert (await call(client, method, path, wildcard, body)).status_code == 200

    async def test_a_refusal_is_not_counted(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        _, reader = await key_with(client, acc, scopes=["keys:read", "account:read"])
        # One token: a refusal that took it would leave GET /keys rate limited.
        await set_limits(runtime, acc.account_id, burst=1, ratePerSecond=1)
        for _ in range(3):
            refused = await client.post(
                "/keys", headers=reader, json={"name": "x", "keyType": "public"}
            )
            expect_error(refused, 403, "insufficient_scope")
            expect_error(await client.get("/events", headers=reader), 403, "insufficient_scope")
        assert (await client.get("/keys", headers=reader)).status_code == 200
        usage = (await client.get("/account", headers=reader)).json()["usage"]
        assert usage["requests"] == 2  # the POST /keys that made the reader, and GET /keys

    async def test_a_refused_write_stores_no_idempotent_answer(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        key_id, reader = await key_with(client, acc, scopes=["keys:read"])
        headers = {**reader, "Idempotency-Key": "5f0e0b4e-2f4c-4d7e-9a47-0b1b3b9d6d11"}
        body = {"name": "x", "keyType": "public"}
        expect_error(
            await client.post("/keys", headers=headers, json=body), 403, "insufficient_scope"
        )
        widened = await client.patch(f"/keys/{key_id}", headers=acc.auth, json={"scopes": None})
        assert widened.status_code == 200
        retried = await client.post("/keys", headers=headers, json=body)
        assert retried.status_code == 201
        assert "idempotent-replayed" not in retried.headers


@pytest.fixture
async def acc(runtime: Runtime) -> AccountWithKey:
    return await create_account(runtime)


@pytest.fixture
async def from_203(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client whose connection comes from 203.0.113.9."""
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
async def from_v6(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("2001:db8::7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class TestIpAllowlist:
    async def test_only_from_the_allowed_networks(
        self,
        client: httpx.AsyncClient,
        from_203: httpx.AsyncClient,
        from_v6: httpx.AsyncClient,
        runtime: Runtime,
        acc: AccountWithKey,
    ) -> None:
        _, auth = await key_with(
            client, acc, restrictions={"ipAllowlist": ["203.0.113.0/24", "2001:db8::/32"]}
        )
        assert (await from_203.get("/keys", headers=auth)).status_code == 200
        assert (await from_v6.get("/keys", headers=auth)).status_code == 200
        for path in ["/keys", "/account", "/environments", "/events"]:
            refused = await client.get(path, headers=auth)  # from 127.0.0.1
            error = expect_error(refused, 403, "ip_not_allowed")["error"]
            assert error["fix"]
        # Refusals were not counted: the create and the two listings were.
        usage = (await from_203.get("/account", headers=auth)).json()["usage"]
        assert usage["requests"] == 3

    async def test_a_forwarded_for_header_is_not_believed_without_a_trusted_proxy(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        _, auth = await key_with(client, acc, restrictions={"ipAllowlist": ["203.0.113.0/24"]})
        resp = await client.get("/keys", headers={**auth, "X-Forwarded-For": "203.0.113.9"})
        expect_error(resp, 403, "ip_not_allowed")


class TestBrowserGuard:
    @pytest.mark.parametrize(
        "headers",
        [
            {"Origin": "https://app.example.com"},
            {"Origin": "null"},
            {"Sec-Fetch-Site": "cross-site"},
        ],
    )
    async def test_a_secret_key_from_a_browser_is_refused_when_the_account_says_so(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        acc: AccountWithKey,
        headers: dict[str, str],
    ) -> None:
        assert (await client.get("/keys", headers={**acc.auth, **headers})).status_code == 200
        resp = await client.patch(
            f"/admin/accounts/{acc.account_id}",
            headers=admin(runtime),
            json={"refuseSecretKeysFromBrowsers": True},
        )
        assert resp.status_code == 200
        assert resp.json()["refuseSecretKeysFromBrowsers"] is True
        for method, path in [("GET", "/keys"), ("GET", "/account"), ("POST", "/environments")]:
            refused = await client.request(
                method, path, headers={**acc.auth, **headers}, json={"name": "e"}
            )
            error = expect_error(refused, 403, "secret_key_in_browser")["error"]
            assert "backend" in error["fix"]
        # Not from a browser, or a same-site fetch without Origin: as before.
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        same_site = {**acc.auth, "Sec-Fetch-Site": "same-origin"}
        assert (await client.get("/keys", headers=same_site)).status_code == 200

    async def test_the_setting_is_shown_changed_and_audited(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        shown = await client.get(f"/admin/accounts/{acc.account_id}", headers=admin(runtime))
        assert shown.json()["refuseSecretKeysFromBrowsers"] is False
        path = f"/admin/accounts/{acc.account_id}"
        for value in ["true", 1, None]:
            bad = await client.patch(
                path, headers=admin(runtime), json={"refuseSecretKeysFromBrowsers": value}
            )
            expect_error(bad, 400, "validation_error")
        on = await client.patch(
            path, headers=admin(runtime), json={"refuseSecretKeysFromBrowsers": True}
        )
        assert on.json()["refuseSecretKeysFromBrowsers"] is True
        mine = await client.get("/account", headers=acc.auth)
        assert mine.json()["refuseSecretKeysFromBrowsers"] is True
        events = (await client.get("/events", headers=acc.auth)).json()["events"]
        [updated] = [e for e in events if e["type"] == "account.updated"]
        assert updated["data"] == {"changed": {"refuseSecretKeysFromBrowsers": True}}
