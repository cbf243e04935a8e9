"""keyhouse-client and its middleware with restricted keys (issue 15; review r15).

The client read only the old verify codes, so ``verify`` raised
``unexpected_response`` for ``insufficient_scope`` and the middleware answered
503 ``service_unavailable`` for a key with an ipAllowlist (it sent no ``ip``).
Against one live ``keyhouse serve`` with a catalog of its own; the apps run
in-process (``httpx.ASGITransport``/``WSGITransport``, whose client address is
chosen per transport).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from keyhouse_client import (
    AsyncKeyhouse,
    Identity,
    Keyhouse,
    KeyhouseAuth,
    KeyhouseWSGIAuth,
    KeyRestrictions,
    VerifyResult,
    identity_of,
)
from keyhouse_client.fastapi import require_key

from tests.clients.python.conftest import Live, unique

REFUSALS = [
    "insufficient_scope",
    "ip_not_allowed",
    "origin_not_allowed",
    "attribute_not_allowed",
    "secret_key_in_browser",
]


@pytest.fixture(scope="module")
def catalog(live: Live) -> Live:
    """The live server's catalog: orders:read, orders:write and senderDomain."""
    resp = httpx.put(
        f"{live.url}/admin/scopes",
        headers={"Authorization": f"Bearer {live.admin_token}"},
        json={
            "scopes": [
                {"name": "orders:read", "description": "Read orders."},
                {"name": "orders:write", "description": "Write orders."},
            ],
            "attributes": [{"name": "senderDomain", "description": "The sending domain."}],
        },
    )
    assert resp.status_code == 200, resp.text
    return live


@pytest.fixture
def account(admin: Keyhouse, catalog: Live) -> str:
    return admin.accounts.create(unique("restricted")).account.id


@pytest.fixture
def guarded(live: Live, account: str) -> str:
    """``account``, refusing its secret keys from browsers."""
    resp = httpx.patch(
        f"{live.url}/admin/accounts/{account}",
        headers={"Authorization": f"Bearer {live.admin_token}"},
        json={"refuseSecretKeysFromBrowsers": True},
    )
    assert resp.status_code == 200, resp.text
    return account


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["error"]["fix"]
    assert body["trackingId"] == response.headers["x-tracking-id"]
    return body


class TestVerifyResult:
    @pytest.mark.parametrize("code", [*REFUSALS, "some_future_refusal"])
    def test_reads_each_refusal_and_a_future_one(self, code: str) -> None:
        body = {
            "valid": False,
            "code": code,
            "reason": "The key's scopes do not grant messages:read.",
            "keyId": "key_01M8NJ0000000000000000000",
            "accountId": "acc_01M8NJ0000000000000000000",
            "keyType": "secret",
            "name": "acme mailer",
            "scopes": ["messages:send"],
            "restrictions": {"ipAllowlist": ["203.0.113.0/24"]},
        }
        result = VerifyResult.from_json(body)
        assert (result.valid, result.code) == (False, code)
        assert result.reason == body["reason"]
        assert result.scopes == ("messages:send",)
        assert result.restrictions == KeyRestrictions(ip_allowlist=("203.0.113.0/24",))

    def test_valid_only_with_code_valid(self) -> None:
        # A body that says valid with a code this client does not know fails closed.
        result = VerifyResult.from_json({"valid": True, "code": "valid_but_newer"})
        assert result.valid is False


class TestVerify:
    def test_scopes_ip_origin_attributes_are_sent(self, admin: Keyhouse, account: str) -> None:
        key = admin.keys.create(
            account,
            "orders",
            scopes=["orders:read"],
            restrictions=KeyRestrictions(
                ip_allowlist=("203.0.113.0/24",), attributes={"senderDomain": ("acme.com",)}
            ),
        )
        assert key.scopes == ("orders:read",)
        assert key.restrictions is not None
        assert key.restrictions.ip_allowlist == ("203.0.113.0/24",)
        ok = admin.verify(
            key.key,
            scopes=["orders:read"],
            ip="203.0.113.7",
            attributes={"senderDomain": "acme.com"},
        )
        assert ok.valid, ok
        assert ok.scopes == ("orders:read",)
        assert ok.restrictions == key.restrictions
        for result, code in [
            (
                admin.verify(key.key, scopes=["orders:write"], ip="203.0.113.7"),
                "insufficient_scope",
            ),
            (admin.verify(key.key, ip="198.51.100.7"), "ip_not_allowed"),
            (admin.verify(key.key), "ip_not_allowed"),
            (
                admin.verify(key.key, ip="203.0.113.7", attributes={"senderDomain": "evil.com"}),
                "attribute_not_allowed",
            ),
        ]:
            assert (result.valid, result.code) == (False, code)
            assert result.reason

    async def test_async(self, live: Live, admin: Keyhouse, account: str) -> None:
        key = admin.keys.create(account, "read", scopes=["orders:read"])
        async with AsyncKeyhouse(live.url, live.verify_token) as verifier:
            result = await verifier.verify(key.key, scopes=["orders:write"])
        assert (result.valid, result.code) == (False, "insufficient_scope")
        assert result.reason is not None
        assert "orders:write" in result.reason


def fastapi_app(verifier: AsyncKeyhouse, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(KeyhouseAuth, client=verifier, **options)

    @app.get("/whoami")
    async def whoami(identity: Identity = Depends(require_key())) -> dict[str, Any]:  # noqa: B008
        return identity.to_json()

    @app.post("/orders")
    async def write(
        identity: Identity = Depends(require_key(scopes=["orders:write"])),  # noqa: B008
    ) -> dict[str, Any]:
        return identity.to_json()

    return app


def http(app: Any, client: tuple[str, int] = ("127.0.0.1", 123)) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=client)
    return httpx.AsyncClient(transport=transport, base_url="http://api")


@pytest.fixture
async def verifier(live: Live) -> AsyncIterator[AsyncKeyhouse]:
    async with AsyncKeyhouse(live.url, live.verify_token, max_retries=0) as client:
        yield client


class TestASGI:
    async def test_ip_allowlist_from_the_client_address(
        self, admin: Keyhouse, account: str, verifier: AsyncKeyhouse
    ) -> None:
        key = admin.keys.create(account, "lan", restrictions={"ipAllowlist": ["127.0.0.0/8"]})
        app = fastapi_app(verifier)
        async with http(app) as inside, http(app, ("203.0.113.9", 5)) as outside:
            ok = await inside.get("/whoami", headers=bearer(key.key))
            assert ok.status_code == 200, ok.text
            assert ok.json()["restrictions"] == {"ipAllowlist": ["127.0.0.0/8"]}
            # The cached answer was for 127.0.0.1: another address is verified again.
            body = refused(
                await outside.get("/whoami", headers=bearer(key.key)), 403, "ip_not_allowed"
            )
            assert "203.0.113.9" in body["error"]["message"]
            assert (await inside.get("/whoami", headers=bearer(key.key))).status_code == 200

    async def test_scopes_for_every_request_and_per_route(
        self, admin: Keyhouse, account: str, verifier: AsyncKeyhouse
    ) -> None:
        reader = admin.keys.create(account, "reader", scopes=["orders:read"])
        writer = admin.keys.create(account, "writer", scopes=["orders:*"])
        plain = admin.keys.create(account, "plain")
        async with http(fastapi_app(verifier)) as client:
            assert (await client.get("/whoami", headers=bearer(reader.key))).status_code == 200
            body = refused(
                await client.post("/orders", headers=bearer(reader.key)), 403, "insufficient_scope"
            )
            assert "orders:write" in body["error"]["message"]
            # The wildcard grants it, and so does a key without scopes.
            assert (await client.post("/orders", headers=bearer(writer.key))).status_code == 200
            assert (await client.post("/orders", headers=bearer(plain.key))).status_code == 200
        async with http(fastapi_app(verifier, scopes=["orders:write"])) as client:
            refused(
                await client.get("/whoami", headers=bearer(reader.key)), 403, "insufficient_scope"
            )
            assert (await client.get("/whoami", headers=bearer(writer.key))).status_code == 200

    async def test_origins_and_secret_keys_from_browsers(
        self, admin: Keyhouse, guarded: str, verifier: AsyncKeyhouse
    ) -> None:
        account = guarded
        public = admin.keys.create(
            account,
            "web",
            key_type="public",
            restrictions={"allowedOrigins": ["https://app.example.com"]},
        )
        secret = admin.keys.create(account, "server")
        app_origin = {"Origin": "https://app.example.com"}
        async with http(fastapi_app(verifier)) as client:
            ok = await client.get("/whoami", headers={**bearer(public.key), **app_origin})
            assert ok.status_code == 200, ok.text
            other = {**bearer(public.key), "Origin": "https://evil.example.org"}
            refused(await client.get("/whoami", headers=other), 403, "origin_not_allowed")
            refused(
                await client.get("/whoami", headers=bearer(public.key)), 403, "origin_not_allowed"
            )
            # The secret key passes from a server, and its cached answer does not
            # let it through from a browser.
            assert (await client.get("/whoami", headers=bearer(secret.key))).status_code == 200
            from_browser = {**bearer(secret.key), **app_origin}
            refused(await client.get("/whoami", headers=from_browser), 403, "secret_key_in_browser")

    async def test_an_attribute_restricted_key_fails_closed(
        self, admin: Keyhouse, account: str, verifier: AsyncKeyhouse
    ) -> None:
        key = admin.keys.create(
            account, "attr", restrictions={"attributes": {"senderDomain": ["acme.com"]}}
        )
        async with http(fastapi_app(verifier)) as client:
            refused(
                await client.get("/whoami", headers=bearer(key.key)), 403, "attribute_not_allowed"
            )


class TestWSGI:
    def test_remote_addr_and_scopes(self, live: Live, admin: Keyhouse, account: str) -> None:
        key = admin.keys.create(
            account,
            "flask",
            scopes=["orders:read"],
            restrictions={"ipAllowlist": ["192.0.2.0/24"]},
        )
        app = flask.Flask("keyhouse_restricted")

        @app.get("/whoami")
        def whoami() -> dict[str, Any]:
            identity = identity_of(flask.request.environ)
            assert identity is not None
            return identity.to_json()

        inner = KeyhouseWSGIAuth(app.wsgi_app, live.url, live.verify_token, scopes=["orders:read"])
        app.wsgi_app = inner  # type: ignore[method-assign]
        inside = httpx.WSGITransport(app=app, remote_addr="192.0.2.10")
        outside = httpx.WSGITransport(app=app, remote_addr="198.51.100.1")
        with httpx.Client(transport=inside, base_url="http://api") as client:
            ok = client.get("/whoami", headers=bearer(key.key))
            assert ok.status_code == 200, ok.text
            assert ok.json()["scopes"] == ["orders:read"]
        with httpx.Client(transport=outside, base_url="http://api") as client:
            refused(client.get("/whoami", headers=bearer(key.key)), 403, "ip_not_allowed")
        narrow = KeyhouseWSGIAuth(app, live.url, live.verify_token, scopes=["orders:write"])
        with httpx.Client(
            transport=httpx.WSGITransport(app=narrow, remote_addr="192.0.2.10"),
            base_url="http://api",
        ) as client:
            refused(client.get("/whoami", headers=bearer(key.key)), 403, "insufficient_scope")
        narrow.close()
        inner.close()
