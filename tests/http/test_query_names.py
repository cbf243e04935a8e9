"""Unknown query parameters are refused with 400 naming them (issue 13, item 6).

``GET /keys?keytype=public&revokd=true`` listed every key: the misspelt
filters were ignored. Every route now accepts exactly the query parameters
its OpenAPI operation documents (case-sensitive), on the direct routes
(``GET /keys``, ``POST /verify``) as on the others, and refuses anything
else before authenticating or metering.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import given
from hypothesis import strategies as st

from keyhouse.config import Settings
from keyhouse.http.query_names import names_in, query_names
from keyhouse.runtime import Runtime
from tests.factories import create_account, create_key, expect_error
from tests.limits.conftest import served
from tests.limits.helpers import account_on_plan


def api_routes(app: FastAPI) -> list[APIRoute]:
    found: list[APIRoute] = []
    pending: list[Any] = list(app.routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, APIRoute):
            found.append(route)
    return found


@pytest.mark.sqlite_only
async def test_each_route_takes_what_its_operation_documents(app: FastAPI) -> None:
    document = app.openapi()
    checked = 0
    for route in api_routes(app):
        if not route.include_in_schema:
            assert query_names(route) == frozenset(), route.path
            continue
        for method in route.methods or ():
            operation = document["paths"][route.path_format][method.lower()]
            documented = {p["name"] for p in operation.get("parameters", []) if p["in"] == "query"}
            assert query_names(route) == documented, (method, route.path)
            checked += 1
    assert checked >= 18


class TestRefused:
    async def test_misspelt_filters_are_named_not_ignored(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        await create_key(runtime, acc.account_id, key_type="public")
        resp = await client.get("/keys?keytype=public&revokd=true", headers=acc.auth)
        error = expect_error(resp, 400, "validation_error")["error"]
        assert "'keytype', 'revokd'" in error["message"]
        assert error["fix"].startswith("This route takes environmentId, keyType, revoked")
        # Spelt right, the filter applies.
        listed = await client.get("/keys?keyType=public&revoked=false", headers=acc.auth)
        assert listed.status_code == 200
        assert [k["keyType"] for k in listed.json()["keys"]] == ["public"]

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/events?limits=5"),
            ("GET", "/environments?name=prod"),
            ("GET", "/account?period=2026-11"),
            ("POST", "/keys/key_01M8N5SHA2TTRENV8FNJF69RB0/revoke?froce=true"),
        ],
    )
    async def test_on_routes_the_solver_serves(
        self, client: httpx.AsyncClient, runtime: Runtime, method: str, path: str
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.request(method, path, headers=acc.auth)
        expect_error(resp, 400, "validation_error")

    async def test_on_verify(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        admin = {"Authorization": f"Bearer {runtime.admin_tokens.first}"}
        resp = await client.post("/verify?debug=1", headers=admin, json={"key": acc.key})
        error = expect_error(resp, 400, "validation_error")["error"]
        assert error["fix"].startswith("This route takes no query parameter")

    async def test_documented_parameters_pass(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        assert (await client.get("/events?limit=5", headers=acc.auth)).status_code == 200
        key = await create_key(runtime, acc.account_id)
        revoked = await client.post(f"/keys/{key.row.id}/revoke?force=true", headers=acc.auth)
        assert revoked.status_code == 200

    async def test_a_long_name_is_not_repeated(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        name = "n" * 25
        resp = await client.get(f"/keys?{name}=1", headers=acc.auth)
        error = expect_error(resp, 400, "validation_error")["error"]
        assert name not in resp.text
        assert "(25 characters)" in error["message"]

    async def test_refused_before_metering(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, monthlyRequests=2)
        for _ in range(5):
            expect_error(
                await client.get("/keys?revokd=1", headers=acc.auth), 400, "validation_error"
            )
        # The quota of two is untouched by the five refusals.
        for _ in range(2):
            assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        expect_error(await client.get("/keys", headers=acc.auth), 402, "usage_limit_exceeded")


@pytest.mark.postgresql_only
def test_two_servers_refuse_at_once(settings: Settings) -> None:
    """Two real serve processes on PostgreSQL, requests at once: every misspelt
    query 400, every right one 200 with the filter applied."""

    async def go(urls: list[str], auth: dict[str, str]) -> list[tuple[bool, int, int]]:
        async with httpx.AsyncClient(timeout=30) as client:

            async def one(i: int) -> tuple[bool, int, int]:
                bad = i % 2 == 0
                query = "keytype=public&revokd=true" if bad else "keyType=public"
                resp = await client.get(f"{urls[i % 2]}/keys?{query}", headers=auth)
                count = len(resp.json().get("keys", [])) if resp.status_code == 200 else -1
                return bad, resp.status_code, count

            return await asyncio.gather(*(one(i) for i in range(40)))

    with served(settings, 2) as urls:
        created = httpx.post(
            f"{urls[0]}/admin/accounts",
            headers={"Authorization": f"Bearer {settings.admin_tokens.get_secret_value()}"}
            if settings.admin_tokens
            else {},
            json={"name": "Acme"},
        )
        assert created.status_code == 201, created.text
        auth = {"Authorization": f"Bearer {created.json()['key']['key']}"}
        results = asyncio.run(go(urls, auth))
    for bad, status, count in results:
        assert (status, count) == ((400, -1) if bad else (200, 0)), (bad, status, count)


@given(st.text(alphabet="ab=&+%2C3A9;é\x00 ", max_size=30))
def test_names_are_read_as_starlette_reads_them(text: str) -> None:
    raw = text.encode("utf-8")
    expected = [name for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True)]
    assert names_in(raw) == expected
