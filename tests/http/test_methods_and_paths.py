"""HEAD on every GET route, and no redirect for a trailing slash (issue 12, H).

HEAD is answered as GET without a body, through the same steps (auth,
metering); a path with a trailing slash is 404 with the envelope, never a
redirect built from the request's Host header.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, expect_error
from tests.limits.conftest import served

# Headers that differ between two answers to the same request.
PER_ANSWER = {"x-tracking-id", "date"}


def _same_headers(head: httpx.Response, get: httpx.Response) -> None:
    __tracebackhide__ = True
    assert head.headers["x-tracking-id"].startswith("req_")
    got = {k: v for k, v in head.headers.items() if k not in PER_ANSWER}
    want = {k: v for k, v in get.headers.items() if k not in PER_ANSWER}
    assert got == want


async def _paths(runtime: Runtime, account: AccountWithKey) -> list[tuple[str, dict[str, str]]]:
    admin = bearer(runtime.admin_tokens.first)
    return [
        ("/healthz", {}),
        ("/readyz", {}),
        ("/keys", account.auth),
        (f"/keys/{account.key_id}", account.auth),
        ("/environments", account.auth),
        ("/events", account.auth),
        ("/admin/accounts", admin),
        (f"/admin/accounts/{account.account_id}", admin),
    ]


class TestHead:
    async def test_every_get_route_answers_head_as_get_without_a_body(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        for path, headers in await _paths(runtime, account):
            # GET twice around HEAD: what a listing shows (lastUsedAt) settles first.
            await client.get(path, headers=headers)
            head = await client.head(path, headers=headers)
            get = await client.get(path, headers=headers)
            assert (path, head.status_code, get.status_code) == (path, 200, 200)
            assert head.content == b""
            _same_headers(head, get)
            assert int(head.headers["content-length"]) == len(get.content) > 0

    async def test_an_error_answers_head_with_the_errors_headers(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        cases = [
            ("/keys", {}, 401),
            ("/keys", bearer(account.key[:-1] + ("A" if account.key[-1] != "A" else "B")), 401),
            ("/keys/key_00000000000000000000000000", account.auth, 404),
            ("/no/such/route", {}, 404),
        ]
        for path, headers, status in cases:
            head = await client.head(path, headers=headers)
            get = await client.get(path, headers=headers)
            assert (path, head.status_code, get.status_code) == (path, status, status)
            assert head.content == b""
            _same_headers(head, get)
            assert int(head.headers["content-length"]) == len(get.content)

    async def test_head_on_a_post_only_route_is_405_allowing_post(
        self, client: httpx.AsyncClient
    ) -> None:
        head = await client.head("/verify")
        assert head.status_code == 405
        assert head.content == b""
        assert head.headers["allow"] == "POST"

    async def test_405_allows_head_wherever_get_is(self, client: httpx.AsyncClient) -> None:
        response = await client.delete("/keys")
        expect_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, HEAD, POST"
        response = await client.post("/healthz")
        expect_error(response, 405, "method_not_allowed")
        assert response.headers["allow"] == "GET, HEAD"

    async def test_head_is_metered_as_get(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        usage = (await client.get("/account", headers=account.auth)).json()["usage"]
        before = usage["requests"]
        assert (await client.head("/keys", headers=account.auth)).status_code == 200
        assert (await client.get("/keys", headers=account.auth)).status_code == 200
        usage = (await client.get("/account", headers=account.auth)).json()["usage"]
        assert usage["requests"] == before + 2

    async def test_the_access_log_says_head(
        self, client: httpx.AsyncClient, capsys: pytest.CaptureFixture[str]
    ) -> None:
        capsys.readouterr()
        response = await client.head("/healthz")
        tracking_id = response.headers["x-tracking-id"]
        lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
        mine = [line for line in lines if line.get("tracking_id") == tracking_id]
        assert [(line["method"], line["status"]) for line in mine] == [("HEAD", 200)]


class TestTrailingSlash:
    @pytest.mark.parametrize(
        ("method", "path", "route"),
        [
            ("GET", "/keys/", "/keys"),
            ("POST", "/keys/", "/keys"),
            ("POST", "/verify/", "/verify"),
            ("GET", "/healthz/", "/healthz"),
            ("HEAD", "/readyz/", "/readyz"),
            ("GET", "/keys/key_00000000000000000000000000/", "/keys/{key_id}"),
        ],
    )
    async def test_is_404_naming_the_path_without_it_and_never_a_redirect(
        self, client: httpx.AsyncClient, method: str, path: str, route: str
    ) -> None:
        headers = {"Host": "attacker.example", "X-Forwarded-Host": "attacker.example"}
        response = await client.request(method, path, headers=headers)
        assert response.status_code == 404
        assert "location" not in response.headers
        if method == "HEAD":
            assert response.content == b""
            return
        body = expect_error(response, 404, "not_found")
        assert body["error"]["fix"] == f"Use {route} without the trailing slash."
        assert "attacker" not in response.text

    async def test_the_fix_never_repeats_the_clients_path(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        account = await create_account(runtime)
        response = await client.get(f"/keys/{account.key}/", headers=account.auth)
        body = expect_error(response, 404, "not_found")
        assert body["error"]["fix"] == "Use /keys/{key_id} without the trailing slash."
        assert account.key not in response.text

    async def test_an_unknown_path_with_a_slash_is_a_plain_404(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/nothing/here/")
        body = expect_error(response, 404, "not_found")
        assert body["error"]["fix"] == "See /docs for the routes keyhouse serves."


@pytest.mark.postgresql_only
async def test_two_serving_processes_answer_head_slash_and_query_keys_alike(
    make_settings: Callable[..., Settings],
) -> None:
    """The same answers from real servers (uvicorn's HEAD handling too), many at once."""
    settings = make_settings()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        account = await create_account(app.state.runtime)
    with served(settings, 2) as urls:
        clients = [httpx.AsyncClient(base_url=url, timeout=30) for url in urls]
        try:
            # One call each first: a process shows the key's lastUsedAt once it
            # has served it (or read the flush), so the listing's length
            # changes once, by that member, and never again (timestamps have a
            # fixed width). Compare lengths after it.
            for c in clients:
                assert (await c.get("/keys", headers=account.auth)).status_code == 200
            for _ in range(3):
                heads = await asyncio.gather(
                    *(c.head("/keys", headers=account.auth) for c in clients for _ in range(5))
                )
                gets = await asyncio.gather(
                    *(c.get("/keys", headers=account.auth) for c in clients)
                )
                assert {r.status_code for r in heads + gets} == {200}
                assert {r.content for r in heads} == {b""}
                lengths = {int(r.headers["content-length"]) for r in heads}
                assert lengths == {len(gets[0].content)}
            slashes = await asyncio.gather(
                *(c.get("/keys/", headers={"Host": "attacker.example"}) for c in clients),
                *(c.post("/verify/") for c in clients),
            )
            for response in slashes:
                expect_error(response, 404, "not_found")
                assert "location" not in response.headers
            query = f"authorization=Bearer%20{account.key}"
            refused = await asyncio.gather(
                *(c.get(f"/keys?{query}", headers=account.auth) for c in clients for _ in range(3))
            )
            for response in refused:
                expect_error(response, 400, "key_in_query")
                echoed = account.key in response.text
                assert not echoed
        finally:
            for client in clients:
                await client.aclose()
