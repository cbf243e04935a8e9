"""``/environments`` through the real app."""

from __future__ import annotations

import unicodedata

import httpx
import pytest

from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, create_environment, create_key, expect_error


class TestEnvironments:
    async def test_create_then_list_newest_first(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        made = []
        for name in ["production", "staging"]:
            resp = await client.post("/environments", headers=acc.auth, json={"name": name})
            assert resp.status_code == 201
            body = resp.json()
            assert body["id"].startswith("env_")
            assert body["accountId"] == acc.account_id
            assert body["name"] == name
            assert body["createdAt"].endswith("Z")
            made.append(body)
        listed = await client.get("/environments", headers=acc.auth)
        assert listed.status_code == 200
        assert listed.json() == {"environments": list(reversed(made))}

    async def test_duplicate_name_is_409(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        await create_environment(runtime, acc.account_id, "production")
        resp = await client.post("/environments", headers=acc.auth, json={"name": "production"})
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "conflict"
        # Another account may use the same name.
        other = await create_account(runtime, "Other")
        resp = await client.post("/environments", headers=other.auth, json={"name": "production"})
        assert resp.status_code == 201

    async def test_bad_names_are_400(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        for body in [{}, {"name": ""}, {"name": "a\nb"}, {"name": "x" * 101}, {"name": None}]:
            resp = await client.post("/environments", headers=acc.auth, json=body)
            assert resp.status_code == 400, body
            assert resp.json()["error"]["code"] == "validation_error"
        assert (await client.get("/environments", headers=acc.auth)).json() == {"environments": []}

    async def test_accounts_do_not_see_each_other(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        await create_environment(runtime, other.account_id, "production")
        assert (await client.get("/environments", headers=acc.auth)).json() == {"environments": []}

    async def test_scoped_key_sees_only_its_environment_and_cannot_create(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        prod = await create_environment(runtime, acc.account_id, "production")
        await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=prod.id)
        listed = (await client.get("/environments", headers=bearer(scoped.plaintext))).json()
        assert [e["id"] for e in listed["environments"]] == [prod.id]
        resp = await client.post(
            "/environments", headers=bearer(scoped.plaintext), json={"name": "qa"}
        )
        assert resp.status_code == 403
        assert resp.json()["error"]["code"] == "insufficient_permissions"


class TestEnvironmentNames:
    @pytest.mark.parametrize(
        ("first", "second"),
        [
            ("prod", "prod\u200b"),
            ("prod", "\ufeffprod"),
            ("prod", " prod "),
            ("caf\u00e9", "cafe\u0301"),  # NFC and NFD spellings of one name
            ("cafe\u0301", "caf\u00e9"),
        ],
    )
    async def test_names_that_look_alike_are_one_name(
        self, client: httpx.AsyncClient, runtime: Runtime, first: str, second: str
    ) -> None:
        acc = await create_account(runtime)
        made = await client.post("/environments", headers=acc.auth, json={"name": first})
        assert made.status_code == 201
        again = await client.post("/environments", headers=acc.auth, json={"name": second})
        expect_error(again, 409, "conflict")
        listed = (await client.get("/environments", headers=acc.auth)).json()["environments"]
        assert [e["id"] for e in listed] == [made.json()["id"]]
        assert listed[0]["name"] == unicodedata.normalize("NFC", first).strip()

    @pytest.mark.parametrize("name", ["\u200b\u200b", "\ufeff", "\u3164", "\u2800", "pro\u200bd"])
    async def test_blank_looking_names_are_400(
        self, client: httpx.AsyncClient, runtime: Runtime, name: str
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.post("/environments", headers=acc.auth, json={"name": name})
        expect_error(resp, 400, "validation_error")
        assert (await client.get("/environments", headers=acc.auth)).json() == {"environments": []}
