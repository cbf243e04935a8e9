"""The gateway in-process (httpx.ASGITransport) in front of a real upstream process:
what passes, what is added and removed, what is refused, and what it costs.

Each test names its own path (``unique``), so the upstream's count of that path
says whether the gateway passed the request on.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import make_url

from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys.format import KeyFormat
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.db.test_outages import proxied
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_error,
)
from tests.gateway.conftest import (
    CLIENT_ADDRESS,
    Upstream,
    expect_provider_error,
    in_process,
)
from tests.limits.conftest import free_port
from tests.limits.helpers import account_on_plan
from tests.proxy import tcp_proxy

IDENTITY = {"x-keyhouse-account-id", "x-keyhouse-key-id", "x-keyhouse-key-type"}


def unique(prefix: str = "/echo") -> str:
    return f"{prefix}/{secrets.token_hex(6)}"


def header_values(echo: dict[str, Any], name: str) -> list[str]:
    return [value for key, value in echo["headers"] if key == name]


class TestPassthrough:
    @pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"])
    async def test_method_path_query_and_body_as_sent(
        self, gateway: httpx.AsyncClient, runtime: Runtime, method: str
    ) -> None:
        acc = await create_account(runtime)
        # Encoded characters stay as sent: %2F is not a '/', '+' not a space.
        raw_path = unique() + "/a%2Fb/c%20d/%E2%9C%93;v=1"
        query = "x=1&x=2&y=a+b&z=%26%3D&empty=&flag"
        body = secrets.token_bytes(3000) if method not in {"GET", "OPTIONS"} else b""
        response = await gateway.request(
            method,
            f"{raw_path}?{query}",
            content=body,
            headers={**acc.auth, "Content-Type": "application/x-custom"},
        )
        assert response.status_code == 200, response.text
        echo = response.json()
        assert echo["method"] == method
        assert echo["rawPath"] == raw_path
        assert echo["query"] == query
        assert echo["bodyLength"] == len(body)
        assert echo["bodySha256"] == hashlib.sha256(body).hexdigest()
        assert header_values(echo, "content-type") == ["application/x-custom"]
        assert response.headers["x-echo"] == "yes"

    async def test_head(self, gateway: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        response = await gateway.head(unique(), headers=acc.auth)
        assert response.status_code == 200
        assert response.content == b""
        assert int(response.headers["content-length"]) > 0  # the GET's, as the upstream said

    async def test_headers_pass_in_order_and_repeated(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        headers = [
            ("Authorization", f"Bearer {acc.key}"),
            ("X-Custom", "one"),
            ("Accept", "text/plain"),
            ("X-Custom", "two"),
            ("Cookie", "a=b"),
            ("User-Agent", "tests/1.0"),
        ]
        response = await gateway.get(unique(), headers=headers)
        echo = response.json()
        assert header_values(echo, "x-custom") == ["one", "two"]
        assert header_values(echo, "accept") == ["text/plain"]
        assert header_values(echo, "cookie") == ["a=b"]
        assert header_values(echo, "user-agent") == ["tests/1.0"]
        # The upstream's own host, as an upstream expects.
        assert header_values(echo, "host") == [gateway_host(response)]

    async def test_hop_by_hop_headers_stay_behind(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        headers = {
            **acc.auth,
            "Connection": "keep-alive, X-Connection-Named",
            "X-Connection-Named": "per hop",
            "Keep-Alive": "timeout=5",
            "TE": "trailers",
            "Trailer": "X-Checksum",
            "Upgrade": "websocket",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Proxy-Connection": "keep-alive",
            "Expect": "100-continue",
        }
        response = await gateway.post(unique(), content=b"body", headers=headers)
        echo = response.json()
        sent = {name for name, _ in echo["headers"]}
        dropped = {name.lower() for name in headers} - {"authorization", "connection"}
        assert not sent & dropped, sent & dropped
        # Its own Connection header (h11's keep-alive, if any) names nothing of the client's.
        assert "x-connection-named" not in " ".join(header_values(echo, "connection")).lower()
        assert echo["bodyLength"] == 4

    async def test_the_forward_auth_header_carries_the_key_and_stays_behind(
        self, settings: Settings, upstream: Upstream, runtime: Runtime
    ) -> None:
        """KEYHOUSE_FORWARD_AUTH_HEADER works as for forward auth (one credential step),
        and that header, like Authorization, never reaches the upstream."""
        acc = await create_account(runtime)
        with_header = settings.model_copy(update={"forward_auth_header": "X-Api-Key"})
        async with in_process(with_header, upstream.url) as gateway:
            response = await gateway.get(unique(), headers={"X-Api-Key": acc.key})
            assert response.status_code == 200, response.text
            echo = response.json()
            assert header_values(echo, "x-api-key") == []
            assert header_values(echo, "x-keyhouse-key-id") == [acc.key_id]
            both = await gateway.get(
                unique(), headers={"X-Api-Key": acc.key, "Authorization": f"Bearer {acc.key}"}
            )
            expect_error(both, 400, "validation_error")

    async def test_a_chunked_request_body(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)

        async def chunks() -> Any:
            for i in range(5):
                yield bytes([i]) * 1000

        response = await gateway.post("/count", content=chunks(), headers=acc.auth)
        assert response.status_code == 200
        assert response.json() == {"bytes": 5000}

    @pytest.mark.parametrize("status", [301, 404, 500, 503])
    async def test_upstream_answers_pass_unchanged(
        self, gateway: httpx.AsyncClient, runtime: Runtime, upstream: Upstream, status: int
    ) -> None:
        acc = await create_account(runtime)
        async with httpx.AsyncClient() as plain:
            direct = await plain.get(f"{upstream.url}/status/{status}")
        response = await gateway.get(f"/status/{status}", headers=acc.auth)
        assert response.status_code == status
        assert response.content == direct.content
        # Every header of the upstream's, with its value (Date is the server's own).
        theirs = [(k, v) for k, v in direct.headers.multi_items() if k not in {"date", "server"}]
        ours = response.headers.multi_items()
        missing = [item for item in theirs if item not in ours]
        assert not missing, missing
        # A redirect is the client's to follow, not the gateway's.
        if status == 301:
            assert response.headers["location"] == "/elsewhere"

    async def test_no_cookie_is_kept_between_callers(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        one, two = await create_account(runtime, "One"), await create_account(runtime, "Two")
        set_cookie = await gateway.get("/status/200", headers=one.auth)
        assert "session=upstream-cookie" in set_cookie.headers["set-cookie"]
        gateway.cookies.clear()  # the test's client keeps cookies; the gateway must not
        echo = (await gateway.get(unique(), headers=two.auth)).json()
        assert header_values(echo, "cookie") == []


def gateway_host(response: httpx.Response) -> str:
    """``host:port`` of the upstream the request went to (from the echo's own request)."""
    echo = response.json()
    [forwarded_to] = [str(v) for k, v in echo["headers"] if k == "host"]
    return forwarded_to


class TestIdentity:
    async def test_authorization_removed_identity_added(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        response = await gateway.get(unique(), headers=acc.auth)
        echo = response.json()
        names = {name for name, _ in echo["headers"]}
        assert "authorization" not in names
        assert acc.key not in response.text  # the key went nowhere
        assert header_values(echo, "x-keyhouse-account-id") == [acc.account_id]
        assert header_values(echo, "x-keyhouse-key-id") == [acc.key_id]
        assert header_values(echo, "x-keyhouse-key-type") == ["secret"]
        assert header_values(echo, "x-keyhouse-environment-id") == []  # account-wide
        assert response.headers["x-tracking-id"].startswith("req_")

    async def test_a_public_and_a_scoped_key_pass(
        self, gateway: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        public = await create_key(runtime, acc.account_id, key_type="public")
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        echo = (await gateway.get(unique(), headers=bearer(public.plaintext))).json()
        assert header_values(echo, "x-keyhouse-key-type") == ["public"]
        assert header_values(echo, "x-keyhouse-key-id") == [public.row.id]
        echo = (await gateway.get(unique(), headers=bearer(scoped.plaintext))).json()
        assert header_values(echo, "x-keyhouse-environment-id") == [env.id]

    async def test_not_spoofable(self, gateway: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        headers = [
            ("Authorization", f"Bearer {acc.key}"),
            ("X-Keyhouse-Account-Id", "acc_01M8N5SHA2TTRENV8FNJF69RB0"),
            ("x-keyhouse-key-type", "secret"),
            ("X-Keyhouse-Environment-Id", "env_01M8N5SHA2TTRENV8FNJF69RB0"),
            ("X-Keyhouse-Admin", "true"),
            ("X-Forwarded-For", "198.51.100.1"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "evil.example"),
            ("Forwarded", "for=198.51.100.1"),
            # What CGI-style servers read as the same headers ('_' is '-' to them).
            ("X_Keyhouse_Environment_Id", "env_01M8N5SHA2TTRENV8FNJF69RB0"),
            ("x-keyhouse_account-id", "acc_01M8N5SHA2TTRENV8FNJF69RB0"),
            ("X_Forwarded_For", "198.51.100.1"),
            ("X-Forwarded-Port", "8443"),
            ("X-Real-Ip", "198.51.100.1"),
        ]
        echo = (await gateway.get(unique(), headers=headers)).json()
        read_as = [name.replace("_", "-") for name, _ in echo["headers"]]
        assert read_as.count("x-keyhouse-account-id") == 1
        assert "x-keyhouse-environment-id" not in read_as
        assert read_as.count("x-forwarded-for") == 1
        assert "x-forwarded-port" not in read_as
        assert "x-real-ip" not in read_as
        assert header_values(echo, "x-keyhouse-account-id") == [acc.account_id]
        assert header_values(echo, "x-keyhouse-key-type") == ["secret"]
        assert header_values(echo, "x-keyhouse-environment-id") == []
        assert header_values(echo, "x-keyhouse-admin") == []
        assert header_values(echo, "x-forwarded-for") == [CLIENT_ADDRESS]
        assert header_values(echo, "x-forwarded-proto") == ["http"]
        assert header_values(echo, "x-forwarded-host") == ["gateway.test"]
        assert header_values(echo, "forwarded") == []


class TestRefusals:
    """keyhouse's envelope, and the upstream never called."""

    async def test_credentials_that_do_not_pass(
        self,
        gateway: httpx.AsyncClient,
        runtime: Runtime,
        upstream: Upstream,
        settings: Settings,
    ) -> None:
        acc = await create_account(runtime)
        revoked = await create_key(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(
                acc.account_id, revoked.row.id, force=True, actor=CLI
            )
        runtime.cache.clear()
        fmt = KeyFormat(settings.key_prefix_secret, settings.key_prefix_public)
        typo = acc.key[:-1] + ("A" if acc.key[-1] != "A" else "B")
        cases: list[tuple[dict[str, str], int, str]] = [
            ({}, 401, "missing_api_key"),
            ({"Authorization": f"Basic {acc.key}"}, 401, "missing_api_key"),
            (bearer(typo), 401, "malformed_api_key"),
            (bearer(fmt.generate("secret")), 401, "invalid_api_key"),
            (bearer(revoked.plaintext), 401, "revoked_api_key"),
            # keyhouse's operator token is no account's key: never forwarded.
            (bearer(runtime.admin_tokens.first), 401, "invalid_api_key"),
        ]
        for headers, status, code in cases:
            path = unique()
            response = await gateway.post(path, headers=headers, content=b"{}")
            expect_error(response, status, code)
            assert upstream.seen(path) == 0, code

    async def test_a_verify_token_is_not_a_key(
        self, make_settings: Callable[..., Settings], upstream: Upstream
    ) -> None:
        """401 as for any string that does not pass, and a failed guess: the 403 "A
        verify token can only call POST /verify" told an outside client that the string
        it held was the proxy's token (reviewer r14)."""
        token = "kh_verify_" + secrets.token_urlsafe(32)
        settings = make_settings(verify_tokens=token, auth_failures_per_minute=2)
        async with in_process(settings, upstream.url) as gateway:
            path = unique()
            for _ in range(2):
                response = await gateway.get(path, headers=bearer(token))
                body = expect_error(response, 401, "invalid_api_key")
                assert "verify" not in body["error"]["message"].lower()
            expect_error(await gateway.get(path, headers=bearer(token)), 429, "rate_limited")
            assert upstream.seen(path) == 0

    async def test_over_quota_402(
        self, gateway: httpx.AsyncClient, runtime: Runtime, upstream: Upstream
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=3)
        path = unique()
        statuses = [(await gateway.get(path, headers=acc.auth)).status_code for _ in range(3)]
        assert statuses == [200, 200, 200]
        expect_error(await gateway.get(path, headers=acc.auth), 402, "usage_limit_exceeded")
        assert upstream.seen(path) == 3

    async def test_rate_limited_429_with_retry_after(
        self, gateway: httpx.AsyncClient, runtime: Runtime, upstream: Upstream
    ) -> None:
        acc = await account_on_plan(runtime, ratePerSecond=1, burst=2)
        path = unique()
        passed = await gateway.get(path, headers=acc.auth)
        assert passed.status_code == 200
        assert passed.headers["ratelimit-limit"] == "2"  # keyhouse's, beside the upstream's
        await gateway.get(path, headers=acc.auth)
        refused = await gateway.get(path, headers=acc.auth)
        expect_error(refused, 429, "rate_limited")
        assert int(refused.headers["retry-after"]) >= 1
        assert upstream.seen(path) == 2

    async def test_bad_input_gets_the_envelope(
        self, gateway: httpx.AsyncClient, runtime: Runtime, upstream: Upstream
    ) -> None:
        acc = await create_account(runtime)
        # Percent-encoded dot segments (httpx resolves literal ones before sending;
        # test_live sends those over a socket).
        for path in ("/a/%2e%2e/admin", "/a/%2E%2e", "/a/%2E/b", "/.%2e/x"):
            response = await gateway.get(path, headers=acc.auth)
            expect_error(response, 400, "validation_error")
        expect_error(
            await gateway.get(unique(), headers={**acc.auth, "X-Big": "x" * 9000}),
            400,
            "validation_error",
        )
        two = [("Authorization", f"Bearer {acc.key}"), ("Authorization", "Bearer other")]
        expect_error(await gateway.get(unique(), headers=two), 400, "validation_error")
        two_lengths = [*acc.auth.items(), ("Content-Length", "2"), ("Content-Length", "3")]
        expect_error(
            await gateway.post(unique(), headers=two_lengths, content=b"ab"),
            400,
            "validation_error",
        )
        # What the API refuses is the upstream's business here: a token in the query.
        response = await gateway.get(unique() + "?token=" + "t" * 40, headers=acc.auth)
        assert response.status_code == 200


class TestProviderErrors:
    """502 provider_error when the upstream fails; it costs the caller nothing."""

    async def test_connect_refused(self, settings: Settings, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        closed = f"http://127.0.0.1:{free_port()}"
        async with in_process(settings, closed) as gateway:
            response = await gateway.get("/anything", headers=acc.auth)
        body = expect_provider_error(response, "connect_error")
        assert acc.key not in str(body)

    @pytest.mark.parametrize(
        ("path", "code"),
        [("/close", "reset"), ("/reset", "reset"), ("/garbage", "protocol_error")],
    )
    async def test_upstream_breaks_the_connection(
        self, gateway_raw: httpx.AsyncClient, runtime: Runtime, path: str, code: str
    ) -> None:
        acc = await create_account(runtime)
        expect_provider_error(await gateway_raw.get(path, headers=acc.auth), code)
        # A body on its way when it broke: the same.
        posted = await gateway_raw.post(path, headers=acc.auth, content=b"x" * 100_000)
        expect_provider_error(posted, code)

    async def test_upstream_never_answers(
        self, make_settings: Callable[..., Settings], runtime: Runtime, upstream: Upstream
    ) -> None:
        acc = await create_account(runtime)
        settings = make_settings(gateway_read_timeout_seconds=0.3)
        async with in_process(settings, upstream.raw_url) as gateway:
            response = await gateway.get("/never", headers=acc.auth)
        body = expect_provider_error(response, "timeout")
        assert "0.3 s" in body["error"]["message"]

    async def test_a_502_costs_nothing_an_upstream_answer_counts(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        runtime: Runtime,
        upstream: Upstream,
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=4, ratePerSecond=1, burst=4)
        async with in_process(settings, upstream.url) as gateway:
            for path in ("/echo/one", "/status/500", "/status/404"):
                assert (await gateway.get(path, headers=acc.auth)).status_code != 502
        async with in_process(settings, f"http://127.0.0.1:{free_port()}") as broken:
            for _ in range(5):
                expect_provider_error(await broken.get("/x", headers=acc.auth), "connect_error")
        # Usage is what the upstream answered (3, a 500 among them), saved when each
        # gateway stopped; the five 502s took neither quota nor rate tokens.
        account = await client.get("/account", headers=acc.auth)
        assert account.json()["usage"]["requests"] == 3
        async with in_process(settings, upstream.url) as gateway:
            assert (await gateway.get("/echo/two", headers=acc.auth)).status_code == 200
            expect_error(
                await gateway.get("/echo/3", headers=acc.auth), 402, "usage_limit_exceeded"
            )


class TestMetering:
    async def test_n_requests_are_n_calls(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        runtime: Runtime,
        upstream: Upstream,
    ) -> None:
        acc = await create_account(runtime)
        public = await create_key(runtime, acc.account_id, key_type="public")
        async with in_process(settings, upstream.url) as gateway:
            for i in range(7):
                auth = acc.auth if i % 2 else bearer(public.plaintext)
                assert (await gateway.post(unique(), headers=auth, content=b"x")).status_code == 200
            expect_error(await gateway.get(unique()), 401, "missing_api_key")  # not counted
        account = await client.get("/account", headers=acc.auth)
        assert account.json()["usage"]["requests"] == 7

    async def test_the_gateways_own_400_costs_nothing(
        self,
        settings: Settings,
        client: httpx.AsyncClient,
        runtime: Runtime,
        upstream: Upstream,
    ) -> None:
        """Reviewer r14: a request h11 will not send (``Content-Length: 5 ``, a trailing
        space) got the gateway's 400 and was counted, though the API never answered."""
        acc = await account_on_plan(runtime, monthlyRequests=1)
        async with in_process(settings, upstream.url) as gateway:
            path = unique()
            for _ in range(3):
                response = await gateway.post(
                    path, headers={**acc.auth, "Content-Length": "5 "}, content=b"hello"
                )
                body = expect_error(response, 400, "validation_error")
                assert body["error"]["fix"]
            assert upstream.seen(path) == 0
            # The one call of the plan is still there.
            assert (await gateway.get(unique(), headers=acc.auth)).status_code == 200
        account = await client.get("/account", headers=acc.auth)
        assert account.json()["usage"]["requests"] == 1


@pytest.fixture
async def gateway_raw(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in front of the misbehaving upstream."""
    async with in_process(settings, upstream.raw_url) as client:
        yield client


@pytest.mark.postgresql_only
async def test_database_down_is_503_and_the_upstream_is_not_called(
    make_settings: Callable[..., Settings],
    pg_url: str,
    runtime: Runtime,
    upstream: Upstream,
) -> None:
    acc = await create_account(runtime)
    url = make_url(pg_url)
    async with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as proxy:
        # No cache: every request asks the database.
        settings = make_settings(database_url=proxied(pg_url, proxy), cache_ttl_seconds=0)
        async with in_process(settings, upstream.url) as gateway:
            assert (await gateway.get(unique(), headers=acc.auth)).status_code == 200
            proxy.reset()
            path = unique()
            response = await gateway.get(path, headers=acc.auth)
            expect_error(response, 503, "service_unavailable")
            assert response.headers["retry-after"] == "2"
            assert upstream.seen(path) == 0
