"""maxKeys: 402 key_limit_reached, counted in the database, exact under concurrency."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx

from keyhouse.runtime import Runtime
from tests.factories import bearer, create_key
from tests.limits.helpers import account_on_plan


async def create(client: httpx.AsyncClient, auth: dict[str, str]) -> httpx.Response:
    return await client.post("/keys", headers=auth, json={"name": "k", "keyType": "public"})


class TestKeyLimit:
    async def test_create_up_to_the_limit_then_402(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, maxKeys=3)
        assert [(await create(client, acc.auth)).status_code for _ in range(2)] == [201, 201]
        refused = await create(client, acc.auth)
        assert refused.status_code == 402
        assert refused.json()["error"]["code"] == "key_limit_reached"
        assert "3 of 3 keys are active" in refused.json()["error"]["fix"]
        # Revoking one frees a place.
        victim = (await client.get("/keys", headers=acc.auth)).json()["keys"][0]["id"]
        assert (await client.post(f"/keys/{victim}/revoke", headers=acc.auth)).status_code == 200
        assert (await create(client, acc.auth)).status_code == 201

    async def test_exact_under_concurrency(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, maxKeys=6)
        responses = await asyncio.gather(*(create(client, acc.auth) for _ in range(20)))
        assert Counter(r.status_code for r in responses) == {201: 5, 402: 15}

    async def test_roll_at_the_limit_needs_no_grace(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await account_on_plan(runtime, maxKeys=2)
        other = await create_key(runtime, acc.account_id)
        with_grace = await client.post(f"/keys/{other.row.id}/roll", headers=acc.auth)
        assert (with_grace.status_code, with_grace.json()["error"]["code"]) == (
            402,
            "key_limit_reached",
        )
        # The refused roll changed nothing: the key still works.
        assert (await client.get("/keys", headers=bearer(other.plaintext))).status_code == 200
        at_once = await client.post(
            f"/keys/{other.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
        )
        assert at_once.status_code == 201

    async def test_import_counts_too(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await account_on_plan(runtime, maxKeys=1)
        resp = await client.post(
            f"/admin/accounts/{acc.account_id}/keys/import",
            headers=bearer(runtime.admin_tokens.first),
            json={"key": "legacy_key_0123456789abcdef", "name": "old", "keyType": "secret"},
        )
        assert (resp.status_code, resp.json()["error"]["code"]) == (402, "key_limit_reached")

    async def test_the_first_key_comes_with_the_account_whatever_the_limit(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        resp = await client.post(
            "/admin/accounts",
            headers=bearer(runtime.admin_tokens.first),
            json={"name": "Tiny", "limits": {"maxKeys": 0}},
        )
        assert resp.status_code == 201
        key = resp.json()["key"]["key"]
        refused = await create(client, bearer(key))
        assert (refused.status_code, refused.json()["error"]["code"]) == (
            402,
            "key_limit_reached",
        )
