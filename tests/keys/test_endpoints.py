"""``/keys`` through the real ASGI app on a real SQLite file."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_core import PydanticCustomError

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from keyhouse.schemas import normalize_name
from tests.factories import (
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_error,
    expect_same_key,
    set_expiry,
)

SCHEMA = json.loads(
    (Path(__file__).parent.parent / "contract" / "list_keys.schema.json").read_text()
)


def check_contract(body: Any) -> None:
    """Validate against the seed's schema; a failure names the path, never the key."""
    __tracebackhide__ = True
    try:
        jsonschema.validate(body, SCHEMA)
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise AssertionError(f"contract violated at {where!r}: {exc.validator}") from None


class TestListKeys:
    async def test_matches_the_seed_contract(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        await create_key(runtime, acc.account_id, key_type="public", environment_id=env.id)
        await create_key(runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(days=1))
        resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        body = resp.json()
        check_contract(body)
        assert len(body["keys"]) == 3
        for key in body["keys"]:
            has_null = None in key.values()
            assert not has_null, key["id"]
        scoped = [k for k in body["keys"] if "environmentId" in k]
        assert [k["environmentId"] for k in scoped] == [env.id]

    async def test_newest_first(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        made = [acc.key_id]
        for i in range(5):
            made.append((await create_key(runtime, acc.account_id, name=f"k{i}")).row.id)
        resp = await client.get("/keys", headers=acc.auth)
        assert [k["id"] for k in resp.json()["keys"]] == list(reversed(made))

    async def test_listed_key_is_the_created_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        created = await client.post(
            "/keys", headers=acc.auth, json={"name": "backend", "keyType": "secret"}
        )
        assert created.status_code == 201
        listed = {
            k["id"]: k["key"] for k in (await client.get("/keys", headers=acc.auth)).json()["keys"]
        }
        expect_same_key(listed[created.json()["id"]], created.json()["key"])
        expect_same_key(listed[acc.key_id], acc.key)

    async def test_filters(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "production")
        pub = await create_key(runtime, acc.account_id, key_type="public")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        gone = await create_key(runtime, acc.account_id)
        assert (
            await client.post(f"/keys/{gone.row.id}/revoke", headers=acc.auth)
        ).status_code == 200

        async def ids(query: str) -> set[str]:
            resp = await client.get(f"/keys?{query}", headers=acc.auth)
            assert resp.status_code == 200
            return {k["id"] for k in resp.json()["keys"]}

        assert await ids("keyType=public") == {pub.row.id}
        assert await ids(f"environmentId={env.id}") == {scoped.row.id}
        assert await ids("revoked=true") == {gone.row.id}
        assert await ids("revoked=false") == {acc.key_id, pub.row.id, scoped.row.id}
        assert await ids("environmentId=env_unknown") == set()

    async def test_revoked_false_includes_expired_keys(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        soon = await create_key(
            runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(seconds=30)
        )
        await set_expiry(runtime, soon.row.id, datetime.now(UTC) - timedelta(seconds=1))
        resp = await client.get("/keys?revoked=false", headers=acc.auth)
        assert soon.row.id in {k["id"] for k in resp.json()["keys"]}

    async def test_bad_filter_values_are_400(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        for query in ["keyType=admin", "revoked=maybe", "environmentId=" + "e" * 200]:
            resp = await client.get(f"/keys?{query}", headers=acc.auth)
            assert resp.status_code == 400, query
            assert resp.json()["error"]["code"] == "validation_error"
            assert resp.json()["error"]["fix"]

    async def test_masked_when_listing_does_not_reveal(
        self, make_settings: Callable[..., Settings]
    ) -> None:
        app = create_app(make_settings(list_reveals_keys=False))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            acc = await create_account(runtime)
            pub = await create_key(runtime, acc.account_id, key_type="public")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                body = (await client.get("/keys", headers=acc.auth)).json()
        check_contract(body)
        by_id = {k["id"]: k["key"] for k in body["keys"]}
        assert by_id[acc.key_id] == f"sk_…{acc.key[-4:]}"
        # Public keys are meant for client-side code: shown in full.
        expect_same_key(by_id[pub.row.id], pub.plaintext)

    @settings(
        max_examples=15,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )
    @given(
        name=st.text(
            st.characters(codec="utf-8", exclude_categories=("C", "Zl", "Zp")),
            min_size=1,
            max_size=100,
        ).filter(lambda s: s.strip() != ""),
        key_type=st.sampled_from(["secret", "public"]),
    )
    async def test_any_created_key_lists_as_created(
        self, client: httpx.AsyncClient, runtime: Runtime, name: str, key_type: str
    ) -> None:
        acc = await create_account(runtime)
        created = await client.post(
            "/keys", headers=acc.auth, json={"name": name, "keyType": key_type}
        )
        # Names are stored in their normal form (keyhouse.schemas.normalize_name:
        # NFC, trimmed); one the rule refuses (only combining marks, an
        # invisible character inside) is 400 and stores nothing.
        try:
            stored = normalize_name(name)
        except PydanticCustomError:
            expect_error(created, 400, "validation_error")
            listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
            assert [k["id"] for k in listed] == [acc.key_id]
            return
        assert created.status_code == 201
        assert created.json()["name"] == stored
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        match = [k for k in listed if k["id"] == created.json()["id"]]
        assert len(match) == 1
        assert match[0]["name"] == stored
        expect_same_key(match[0]["key"], created.json()["key"])


class TestCreateKey:
    async def test_returns_the_full_key_object(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.post(
            "/keys", headers=acc.auth, json={"name": "widget", "keyType": "public"}
        )
        assert resp.status_code == 201
        body = resp.json()
        check_contract({"keys": [body]})
        assert body["key"].startswith("pk_")
        assert runtime.key_format.parse(body["key"]).key_type == "public"
        assert body["accountId"] == acc.account_id
        assert body["revoked"] is False

    async def test_created_key_authenticates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        body = (
            await client.post("/keys", headers=acc.auth, json={"name": "n", "keyType": "secret"})
        ).json()
        assert (await client.get("/keys", headers=bearer(body["key"]))).status_code == 200

    async def test_with_expiry(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        resp = await client.post(
            "/keys",
            headers=acc.auth,
            json={"name": "n", "keyType": "secret", "expiresAt": "2099-01-01T00:00:00+02:00"},
        )
        assert resp.status_code == 201
        assert resp.json()["expiresAt"] == "2098-12-31T22:00:00.000Z"

    async def test_bad_bodies_are_400_and_store_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        bad: list[dict[str, Any]] = [
            {"name": "", "keyType": "secret"},
            {"name": "x" * 101, "keyType": "secret"},
            {"name": "tab\there", "keyType": "secret"},
            {"name": "n", "keyType": "admin"},
            {"name": "n"},
            {"name": 5, "keyType": "secret"},
            {"name": "n", "keyType": "secret", "expiresAt": "2099-01-01T00:00:00"},
            {"name": "n", "keyType": "secret", "expiresAt": "2001-01-01T00:00:00Z"},
            {"name": "n", "keyType": "secret", "accountId": "acc_other"},
        ]
        for body in bad:
            resp = await client.post("/keys", headers=acc.auth, json=body)
            assert resp.status_code == 400, body
            assert resp.json()["error"]["code"] == "validation_error"
            assert resp.json()["error"]["fix"]
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert [k["id"] for k in listed] == [acc.key_id]

    async def test_unknown_environment_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        env = await create_environment(runtime, other.account_id, "production")
        for env_id in ["env_nope", env.id]:
            resp = await client.post(
                "/keys",
                headers=acc.auth,
                json={"name": "n", "keyType": "secret", "environmentId": env_id},
            )
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "not_found"


class TestGetKey:
    async def test_own_key(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        resp = await client.get(f"/keys/{acc.key_id}", headers=acc.auth)
        assert resp.status_code == 200
        expect_same_key(resp.json()["key"], acc.key)

    async def test_another_accounts_key_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        for key_id in [other.key_id, "key_doesnotexist", "%00", "x" * 500]:
            resp = await client.get(f"/keys/{key_id}", headers=acc.auth)
            assert resp.status_code == 404, key_id
            assert resp.json()["error"]["code"] == "not_found"


class TestRevokeKey:
    async def test_revoke_is_idempotent_and_takes_effect(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        victim = await create_key(runtime, acc.account_id)
        first = await client.post(f"/keys/{victim.row.id}/revoke", headers=acc.auth)
        assert first.status_code == 200
        assert first.json()["revoked"] is True
        again = await client.post(f"/keys/{victim.row.id}/revoke", headers=acc.auth)
        assert again.status_code == 200
        assert again.json() == first.json()
        refused = await client.get("/keys", headers=bearer(victim.plaintext))
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "revoked_api_key"

    async def test_another_accounts_key_is_404_and_unchanged(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        resp = await client.post(f"/keys/{other.key_id}/revoke", headers=acc.auth)
        assert resp.status_code == 404
        assert resp.json()["error"]["code"] == "not_found"
        assert (await client.get("/keys", headers=other.auth)).status_code == 200

    async def test_last_account_wide_secret_key_needs_force(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        # A key expiring within the hour does not count as a way back in.
        await create_key(
            runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(minutes=30)
        )
        resp = await client.post(f"/keys/{acc.key_id}/revoke", headers=acc.auth)
        assert resp.status_code == 409
        assert resp.json()["error"]["code"] == "last_secret_key"
        assert "force=true" in resp.json()["error"]["fix"]
        assert (await client.get("/keys", headers=acc.auth)).status_code == 200
        forced = await client.post(f"/keys/{acc.key_id}/revoke?force=true", headers=acc.auth)
        assert forced.status_code == 200
        assert forced.json()["revoked"] is True

    async def test_with_another_secret_key_no_force_needed(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        spare = await create_key(runtime, acc.account_id)
        resp = await client.post(f"/keys/{acc.key_id}/revoke", headers=bearer(spare.plaintext))
        assert resp.status_code == 200


class TestEnvironmentScope:
    async def test_scoped_key_sees_and_manages_only_its_environment(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        prod = await create_environment(runtime, acc.account_id, "production")
        staging = await create_environment(runtime, acc.account_id, "staging")
        prod_key = await create_key(runtime, acc.account_id, environment_id=prod.id)
        staging_key = await create_key(runtime, acc.account_id, environment_id=staging.id)
        auth = bearer(staging_key.plaintext)

        listed = (await client.get("/keys", headers=auth)).json()["keys"]
        assert {k["id"] for k in listed} == {staging_key.row.id}
        filtered = (await client.get(f"/keys?environmentId={prod.id}", headers=auth)).json()
        assert filtered == {"keys": []}
        for path in [f"/keys/{prod_key.row.id}", f"/keys/{acc.key_id}"]:
            resp = await client.get(path, headers=auth)
            assert resp.status_code == 404
            assert resp.json()["error"]["code"] == "not_found"
        resp = await client.post(f"/keys/{prod_key.row.id}/revoke", headers=auth)
        assert resp.status_code == 404

        # Creating: in its own environment by default, never elsewhere.
        made = await client.post("/keys", headers=auth, json={"name": "n", "keyType": "public"})
        assert made.status_code == 201
        assert made.json()["environmentId"] == staging.id
        refused = await client.post(
            "/keys",
            headers=auth,
            json={"name": "n", "keyType": "secret", "environmentId": prod.id},
        )
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "insufficient_permissions"

        # The production key is untouched.
        assert (await client.get("/keys", headers=bearer(prod_key.plaintext))).status_code == 200
