"""``KeyhouseAuth`` in real FastAPI, Starlette and Litestar apps (in-process, through
``httpx.ASGITransport``) and ``KeyhouseWSGIAuth`` in a real Flask app
(``httpx.WSGITransport``), each verifying against a live ``keyhouse serve``."""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import anyio
import flask
import httpx
import pytest
from fastapi import Depends, FastAPI
from keyhouse_client import (
    AccountClient,
    AsyncKeyhouse,
    Identity,
    Keyhouse,
    KeyhouseAuth,
    KeyhouseWSGIAuth,
    identity_of,
)
from keyhouse_client.fastapi import KeyhouseIdentity, require_key
from litestar import Litestar
from litestar import Request as LitestarRequest
from litestar import get as litestar_get
from litestar.middleware import DefineMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from tests.clients.python.conftest import Live, unique
from tests.limits.conftest import free_port

FRAMEWORKS = ["fastapi", "starlette", "litestar"]


def _whoami(identity: Identity | None) -> dict[str, Any]:
    assert identity is not None
    return identity.to_json()


def fastapi_app(**options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(KeyhouseAuth, **options)

    @app.get("/whoami")
    async def whoami(identity: KeyhouseIdentity) -> dict[str, Any]:
        return identity.to_json()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def starlette_app(**options: Any) -> Starlette:
    """A Starlette app with KeyhouseAuth given ``options``; without options, none
    (the test wraps it itself)."""

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse(_whoami(request.state.keyhouse))

    async def healthz(request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[Route("/whoami", whoami), Route("/healthz", healthz)],
        middleware=[Middleware(KeyhouseAuth, **options)] if options else [],
    )


def litestar_app(**options: Any) -> Litestar:
    @litestar_get("/whoami")
    async def whoami(request: LitestarRequest[Any, Any, Any]) -> dict[str, Any]:
        return _whoami(identity_of(request.scope))

    @litestar_get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return Litestar(
        route_handlers=[whoami, healthz],
        middleware=[DefineMiddleware(KeyhouseAuth, **options)],
    )


APPS: dict[str, Callable[..., Any]] = {
    "fastapi": fastapi_app,
    "starlette": starlette_app,
    "litestar": litestar_app,
}


@pytest.fixture
async def verifier(live: Live) -> AsyncIterator[AsyncKeyhouse]:
    async with AsyncKeyhouse(live.url, live.verify_token, max_retries=0) as client:
        yield client


def http(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def assert_refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert body["trackingId"] == response.headers["x-tracking-id"]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    return body


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_a_valid_key_reaches_the_route(
    framework: str, admin: Keyhouse, live: Live, verifier: AsyncKeyhouse
) -> None:
    account = admin.accounts.create(unique(framework)).account
    first = admin.keys.list(account.id)[0]
    key = admin.keys.create(account.id, "plain", key_type="public")
    app = APPS[framework](client=verifier, exclude_paths=["/healthz"])
    async with http(app) as client:
        response = await client.get("/whoami", headers=bearer(key.key))
        assert response.status_code == 200, response.text
        assert response.json() == {
            "accountId": account.id,
            "keyId": key.id,
            "environmentId": None,
            "keyType": "public",
            "name": "plain",
        }
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert_refused(await client.get("/whoami"), 401, "missing_api_key")
    # A scoped key's environment is in the identity.
    with AccountClient(live.url, first.key) as own:
        staging = own.environments.create("staging")
        scoped = own.keys.create("scoped", environment_id=staging.id)
    async with http(app) as client:
        identity = (await client.get("/whoami", headers=bearer(scoped.key))).json()
    assert identity["environmentId"] == staging.id
    assert identity["keyId"] == scoped.id


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_each_refusal(framework: str, admin: Keyhouse, verifier: AsyncKeyhouse) -> None:
    created = admin.accounts.create(unique(framework))
    account_id = created.account.id
    revoked = admin.keys.create(account_id, "revoked")
    admin.keys.revoke(revoked.id)
    expired = admin.keys.create(account_id, "expired")
    admin.keys.roll(expired.id, expires_in_seconds=0)
    quota = admin.accounts.create(unique("quota"), limits={"monthlyRequests": 1}).key
    rated = admin.accounts.create(unique("rate"), limits={"ratePerSecond": 1, "burst": 1}).key
    typo = created.key.key[:-1] + ("A" if created.key.key[-1] != "A" else "B")

    app = APPS[framework](client=verifier)
    async with http(app) as client:

        async def get(headers: dict[str, str]) -> httpx.Response:
            return await client.get("/whoami", headers=headers)

        assert_refused(await get({}), 401, "missing_api_key")
        body = assert_refused(await get({"Authorization": "Basic abc"}), 401, "missing_api_key")
        assert body["error"]["fix"]
        assert_refused(await get(bearer(typo)), 401, "malformed_api_key")
        unknown = "unknown_" + secrets.token_urlsafe(24)
        assert_refused(await get(bearer(unknown)), 401, "invalid_api_key")
        assert_refused(await get(bearer("x" * 2000)), 401, "invalid_api_key")
        assert_refused(await get(bearer(revoked.key)), 401, "revoked_api_key")
        assert_refused(await get(bearer(expired.key)), 401, "expired_api_key")

        assert (await get(bearer(quota.key))).status_code == 200
        assert_refused(await get(bearer(quota.key)), 402, "usage_limit_exceeded")

        # Limited plans are never answered from the cache: the second is refused.
        assert (await get(bearer(rated.key))).status_code == 200
        limited = await get(bearer(rated.key))
        assert_refused(limited, 429, "rate_limited")
        assert limited.headers["retry-after"] == "1"
        assert limited.headers["ratelimit-limit"] == "1"
        assert limited.headers["ratelimit-remaining"] == "0"

        two = await client.get(
            "/whoami",
            headers=[("Authorization", f"Bearer {created.key.key}"), ("Authorization", "Bearer x")],
        )
        assert_refused(two, 400, "validation_error")
        assert (await get(bearer(created.key.key))).status_code == 200


@pytest.mark.parametrize("framework", FRAMEWORKS)
async def test_fails_closed_when_keyhouse_cannot_be_reached(framework: str) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    async with AsyncKeyhouse(url, "t" * 24, max_retries=0) as unreachable:
        app = APPS[framework](client=unreachable, exclude_paths=["/healthz"])
        async with http(app) as client:
            response = await client.get("/whoami", headers=bearer("sk_" + "a" * 49))
            assert (await client.get("/healthz")).status_code == 200
    assert_refused(response, 503, "service_unavailable")
    assert response.headers["retry-after"] == "2"


async def test_a_refusal_carries_keyhouses_tracking_id(live: Live, admin: Keyhouse) -> None:
    """Reviewer r14: the middleware's refusals carried an id of its own (``req_<hex>``),
    so its answer and keyhouse's log line could not be matched. Now keyhouse's id of
    the verification (its answer's X-Tracking-Id); its own only when keyhouse was not
    asked (no key) or not reached."""
    quota = admin.accounts.create(unique("tracked"), limits={"monthlyRequests": 1}).key
    seen: list[str] = []

    async def record(response: httpx.Response) -> None:
        seen.append(response.headers["x-tracking-id"])

    hooked = httpx.AsyncClient(event_hooks={"response": [record]})
    verifier = AsyncKeyhouse(live.url, live.verify_token, http_client=hooked)
    async with hooked, verifier, http(starlette_app(client=verifier, cache_ttl=0)) as client:
        unknown = bearer("unknown_" + secrets.token_urlsafe(24))
        refused = await client.get("/whoami", headers=unknown)
        body = assert_refused(refused, 401, "invalid_api_key")
        assert body["trackingId"] == seen[-1]
        assert (await client.get("/whoami", headers=bearer(quota.key))).status_code == 200
        over = await client.get("/whoami", headers=bearer(quota.key))
        body = assert_refused(over, 402, "usage_limit_exceeded")
        assert body["trackingId"] == seen[-1]
        # Too long for keyhouse (its 400): the middleware's 401, keyhouse's id.
        body = assert_refused(
            await client.get("/whoami", headers=bearer("x" * 1000)), 401, "invalid_api_key"
        )
        assert body["trackingId"] == seen[-1]
        asked = len(seen)
        body = assert_refused(await client.get("/whoami"), 401, "missing_api_key")
        assert len(seen) == asked  # not asked: the middleware's own id
        assert body["trackingId"] not in seen


def test_a_wsgi_refusal_carries_keyhouses_tracking_id(live: Live) -> None:
    """``test_a_refusal_carries_keyhouses_tracking_id`` for ``KeyhouseWSGIAuth``."""
    seen: list[str] = []

    def record_sync(response: httpx.Response) -> None:
        seen.append(response.headers["x-tracking-id"])

    hooked_sync = httpx.Client(event_hooks={"response": [record_sync]})
    with hooked_sync, Keyhouse(live.url, live.verify_token, http_client=hooked_sync) as sync:
        wsgi = KeyhouseWSGIAuth(flask.Flask("tracked").wsgi_app, client=sync, cache_ttl=0)
        transport = httpx.WSGITransport(app=wsgi)
        with httpx.Client(transport=transport, base_url="http://api") as wsgi_client:
            unknown = bearer("unknown_" + secrets.token_urlsafe(24))
            wsgi_refused = wsgi_client.get("/whoami", headers=unknown)
    assert_refused(wsgi_refused, 401, "invalid_api_key")
    assert wsgi_refused.json()["trackingId"] == seen[-1]


async def test_a_wrong_service_token_fails_closed_and_is_logged(
    live: Live, admin: Keyhouse, caplog: pytest.LogCaptureFixture
) -> None:
    key = admin.accounts.create(unique("token")).key
    token = "kh_verify_" + secrets.token_urlsafe(24)
    app = KeyhouseAuth(starlette_app(), live.url, token)
    with caplog.at_level(logging.ERROR, logger="keyhouse_client"):
        async with http(app) as client:
            response = await client.get("/whoami", headers=bearer(key.key))
    await app.client.close()
    body = assert_refused(response, 503, "service_unavailable")
    [record] = [r for r in caplog.records if r.name == "keyhouse_client"]
    # The logged id is keyhouse's, and the client's answer carries the same.
    assert body["trackingId"] == record.__dict__["tracking_id"]
    assert record.getMessage() == "keyhouse_refused_verification"
    assert (record.__dict__["status"], record.__dict__["code"]) == (401, "invalid_api_key")
    assert token not in caplog.text
    assert key.key not in caplog.text


class TestCache:
    async def test_a_revocation_is_honoured_within_the_ttl(
        self, admin: Keyhouse, verifier: AsyncKeyhouse
    ) -> None:
        account = admin.accounts.create(unique("cache")).account
        key = admin.keys.create(account.id, "cached")
        middleware = KeyhouseAuth(starlette_app(), client=verifier, cache_ttl=1.5)
        async with http(middleware) as client:
            cached_after = time.monotonic()
            assert (await client.get("/whoami", headers=bearer(key.key))).status_code == 200
            admin.keys.revoke(key.id)
            revoked_at = time.monotonic()
            # Still cached: no request reaches keyhouse until the entry ends.
            assert (await client.get("/whoami", headers=bearer(key.key))).status_code == 200
            while (response := await client.get("/whoami", headers=bearer(key.key))).is_success:
                assert time.monotonic() - revoked_at < 4, "the revoked key kept passing"
                await anyio.sleep(0.05)
            refused_at = time.monotonic()
        assert_refused(response, 401, "revoked_api_key")
        # The entry lived its TTL from keyhouse's answer, and not longer (with
        # slack for a loaded machine).
        assert refused_at - cached_after >= 1.5
        assert refused_at - revoked_at < 1.5 + 1.0

    async def test_keyed_by_sha256_bounded_and_unmetered(
        self, admin: Keyhouse, live: Live, verifier: AsyncKeyhouse
    ) -> None:
        created = admin.accounts.create(unique("lru"))
        keys = [created.key.key] + [
            admin.keys.create(created.account.id, f"k{n}").key for n in range(2)
        ]
        middleware = KeyhouseAuth(starlette_app(), client=verifier, cache_max_entries=2)
        async with http(middleware) as client:
            # Three keys into two places: the first is evicted; then the other
            # two are answered from the cache, twice each.
            for key in [*keys, *keys[1:], *keys[1:]]:
                assert (await client.get("/whoami", headers=bearer(key))).status_code == 200
        stored = list(middleware.cache._entries)
        assert stored == [hashlib.sha256(k.encode()).digest() for k in keys[1:]]
        assert all(k not in repr(middleware.cache._entries) for k in keys)
        # A cached answer is not counted: 7 requests, 3 verifications.
        with AccountClient(live.url, created.key.key) as own:
            usage = own.account.get().usage
        assert usage is not None
        assert usage.requests == 3

    async def test_no_cache_counts_every_request(
        self, admin: Keyhouse, live: Live, verifier: AsyncKeyhouse
    ) -> None:
        created = admin.accounts.create(unique("nocache"))
        middleware = KeyhouseAuth(starlette_app(), client=verifier, cache_ttl=0)
        async with http(middleware) as client:
            for _ in range(4):
                response = await client.get("/whoami", headers=bearer(created.key.key))
                assert response.status_code == 200
        assert len(middleware.cache) == 0
        with AccountClient(live.url, created.key.key) as own:
            usage = own.account.get().usage
        assert usage is not None
        assert usage.requests == 4


async def test_require_key_without_the_middleware_fails_closed() -> None:
    app = FastAPI()

    @app.get("/whoami")
    async def whoami(identity: Annotated[Identity, Depends(require_key())]) -> dict[str, Any]:
        return identity.to_json()

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        response = await client.get("/whoami", headers=bearer("sk_" + "a" * 49))
    assert response.status_code == 500


async def test_lifespan_shutdown_closes_the_client(live: Live) -> None:
    middleware = KeyhouseAuth(starlette_app(), live.url, live.verify_token)
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[str] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message["type"])

    await middleware({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert middleware.client._http.is_closed


async def test_websocket_handshake(admin: Keyhouse, verifier: AsyncKeyhouse) -> None:
    """Driven as an ASGI server drives it (httpx has no WebSocket client)."""
    key = admin.accounts.create(unique("ws")).key

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json(_whoami(websocket.state.keyhouse))
        await websocket.close()

    app = Starlette(
        routes=[WebSocketRoute("/ws", echo)],
        middleware=[Middleware(KeyhouseAuth, client=verifier)],
    )

    async def handshake(headers: dict[str, str]) -> list[dict[str, Any]]:
        incoming: list[dict[str, Any]] = [{"type": "websocket.connect"}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {
            "type": "websocket",
            "asgi": {"version": "3.0"},
            "scheme": "ws",
            "path": "/ws",
            "raw_path": b"/ws",
            "root_path": "",
            "query_string": b"",
            "headers": [(n.lower().encode(), v.encode()) for n, v in headers.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("api", 80),
            "subprotocols": [],
        }
        await app(scope, receive, send)
        return sent

    accepted = await handshake(bearer(key.key))
    assert [m["type"] for m in accepted] == [
        "websocket.accept",
        "websocket.send",
        "websocket.close",
    ]
    assert key.id in accepted[1]["text"]
    refused = await handshake(bearer("unknown_" + secrets.token_urlsafe(24)))
    assert refused == [{"type": "websocket.close", "code": 1008}]


class TestWSGI:
    @staticmethod
    def flask_app(**options: Any) -> flask.Flask:
        app = flask.Flask("keyhouse_test")

        @app.get("/whoami")
        def whoami() -> dict[str, Any]:
            return _whoami(identity_of(flask.request.environ))

        @app.get("/healthz")
        def healthz() -> dict[str, str]:
            return {"status": "ok"}

        app.wsgi_app = KeyhouseWSGIAuth(app.wsgi_app, **options)  # type: ignore[method-assign]
        return app

    def test_flask(self, admin: Keyhouse, live: Live) -> None:
        created = admin.accounts.create(unique("flask"))
        quota = admin.accounts.create(unique("flaskquota"), limits={"monthlyRequests": 1}).key
        app = self.flask_app(base_url=live.url, token=live.verify_token, exclude_paths=["/healthz"])
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url="http://api") as client:
            response = client.get("/whoami", headers=bearer(created.key.key))
            assert response.status_code == 200, response.text
            assert response.json()["accountId"] == created.account.id
            assert client.get("/healthz").status_code == 200
            assert_refused(client.get("/whoami"), 401, "missing_api_key")
            unknown = bearer("unknown_" + secrets.token_urlsafe(24))
            assert_refused(client.get("/whoami", headers=unknown), 401, "invalid_api_key")
            assert client.get("/whoami", headers=bearer(quota.key)).status_code == 200
            refused = client.get("/whoami", headers=bearer(quota.key))
            assert_refused(refused, 402, "usage_limit_exceeded")
        app.wsgi_app.close()  # type: ignore[attr-defined]

    def test_flask_fails_closed(self) -> None:
        url = f"http://127.0.0.1:{free_port()}"
        app = self.flask_app(base_url=url, token="t" * 24)
        with httpx.Client(transport=httpx.WSGITransport(app=app), base_url="http://api") as c:
            response = c.get("/whoami", headers=bearer("sk_" + "a" * 49))
        assert_refused(response, 503, "service_unavailable")
        app.wsgi_app.close()  # type: ignore[attr-defined]


def test_options_are_checked() -> None:
    app = starlette_app()
    with pytest.raises(ValueError, match="base_url and token"):
        KeyhouseAuth(app)
    with pytest.raises(ValueError, match="cache_ttl"):
        KeyhouseAuth(app, "http://127.0.0.1:1", "t" * 24, cache_ttl=float("nan"))
