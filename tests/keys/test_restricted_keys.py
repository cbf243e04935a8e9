"""Restricted keys on the key API (issue 15 items 2 and 5): keys carry ``scopes`` and
``restrictions``, show them only when set, narrow and widen them by ``PATCH``, keep
them on a roll, and never make a key wider than the key that makes it.

Through the real app on both engines; statuses and error codes asserted.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    committed_events,
    create_account,
    create_environment,
    expect_error,
)
from tests.keys.test_endpoints import check_contract

SEND = "messages:send"
READ = "messages:read"


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def declare(client: httpx.AsyncClient, runtime: Runtime) -> None:
    """The platform's catalog: two message scopes and two attributes."""
    resp = await client.put(
        "/admin/scopes",
        headers=admin(runtime),
        json={
            "scopes": [
                {"name": SEND, "description": "Send messages."},
                {"name": READ, "description": "Read messages."},
            ],
            "attributes": [
                {"name": "senderDomain", "description": "The domain a message is sent from."},
                {"name": "channel", "description": "email or sms."},
            ],
        },
    )
    assert resp.status_code == 200, resp.text


async def create(
    client: httpx.AsyncClient, auth: dict[str, str], status: int = 201, **body: Any
) -> dict[str, Any]:
    resp = await client.post("/keys", headers=auth, json={"name": "k", "keyType": "secret", **body})
    code = resp.json().get("error", {}).get("code") if resp.status_code >= 400 else None
    assert resp.status_code == status, f"{resp.status_code} {code}"
    result: dict[str, Any] = resp.json()
    return result


async def restricted_key(
    client: httpx.AsyncClient, acc: AccountWithKey, **body: Any
) -> tuple[dict[str, Any], dict[str, str]]:
    """A key made by the account's unrestricted key, and its Authorization header."""
    made = await create(client, acc.auth, **body)
    return made, bearer(made["key"])


@pytest.fixture
async def acc(client: httpx.AsyncClient, runtime: Runtime) -> AccountWithKey:
    await declare(client, runtime)
    return await create_account(runtime)


class TestCreate:
    async def test_scopes_and_restrictions_are_stored_and_shown(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        made = await create(
            client,
            acc.auth,
            scopes=[SEND, SEND, "keys:read"],
            restrictions={
                "ipAllowlist": ["203.0.113.0/24", "2001:db8::/32"],
                "attributes": {"senderDomain": ["acme.com", "acme.org"]},
            },
        )
        # Deduplicated and sorted, in the API's shape.
        assert made["scopes"] == ["keys:read", SEND]
        assert made["restrictions"] == {
            "ipAllowlist": ["203.0.113.0/24", "2001:db8::/32"],
            "attributes": {"senderDomain": ["acme.com", "acme.org"]},
        }
        shown = await client.get(f"/keys/{made['id']}", headers=acc.auth)
        assert shown.status_code == 200
        assert shown.json()["scopes"] == made["scopes"]
        assert shown.json()["restrictions"] == made["restrictions"]
        listed = await client.get("/keys", headers=acc.auth)
        [mine] = [k for k in listed.json()["keys"] if k["id"] == made["id"]]
        assert mine["scopes"] == made["scopes"]
        assert mine["restrictions"] == made["restrictions"]

    async def test_an_unrestricted_key_is_the_seeds_object(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        await create(client, acc.auth, keyType="public")
        await create(client, acc.auth, scopes=[SEND])
        listed = (await client.get("/keys", headers=acc.auth)).json()
        check_contract(listed)
        for key in listed["keys"]:
            if "scopes" not in key:
                assert "restrictions" not in key
                assert set(key) <= {
                    "id",
                    "key",
                    "keyType",
                    "environmentId",
                    "accountId",
                    "name",
                    "revoked",
                    "createdAt",
                    "lastUsedAt",
                    "expiresAt",
                }

    async def test_empty_scopes_is_a_key_that_may_do_nothing(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        made, auth = await restricted_key(client, acc, scopes=[])
        assert made["scopes"] == []
        expect_error(await client.get("/keys", headers=auth), 403, "insufficient_scope")

    @pytest.mark.parametrize(
        ("body", "named"),
        [
            ({"scopes": ["messages:delete"]}, "messages:delete"),
            ({"scopes": ["Messages:Send"]}, "scopes[0]"),
            ({"scopes": ["billing:*"]}, "billing:*"),
            ({"restrictions": {"ipAllowlist": ["203.0.113.5/24"]}}, "ipAllowlist[0]"),
            ({"restrictions": {"ipAllowlist": ["not a network"]}}, "ipAllowlist[0]"),
            # Review r15: zone ids were stored and shown as written.
            ({"restrictions": {"ipAllowlist": ["fe80::1%eth0/128"]}}, "zone id"),
            ({"restrictions": {"ipAllowlist": ["2001:db8::%zz/32"]}}, "zone id"),
            ({"restrictions": {"allowedOrigins": ["https://app.example.com"]}}, "public"),
            ({"restrictions": {"attributes": {"region": ["eu"]}}}, "region"),
        ],
    )
    async def test_what_the_catalog_or_the_rules_refuse_is_400_naming_it(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,
        body: dict[str, Any],
        named: str,
    ) -> None:
        resp = await client.post(
            "/keys", headers=acc.auth, json={"name": "k", "keyType": "secret", **body}
        )
        error = expect_error(resp, 400, "validation_error")["error"]
        assert named in error["message"], error["message"]
        assert error.get("fix")
        keys = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert len(keys) == 1, "a refused create stored a key"

    @pytest.mark.parametrize(
        "body",
        [
            {"scopes": "keys:read"},
            {"scopes": [1]},
            {"scopes": None},
            {"restrictions": None},
            {"restrictions": {"ipAllowlist": []}},
            {"restrictions": {"ipAllowlist": "203.0.113.0/24"}},
            {"restrictions": {"other": 1}},
            {"restrictions": {"attributes": {"senderDomain": []}}},
            {"restrictions": {"attributes": {"senderDomain": "acme.com"}}},
        ],
    )
    async def test_wrong_shapes_are_400(
        self, client: httpx.AsyncClient, acc: AccountWithKey, body: dict[str, Any]
    ) -> None:
        resp = await client.post(
            "/keys", headers=acc.auth, json={"name": "k", "keyType": "secret", **body}
        )
        expect_error(resp, 400, "validation_error")

    async def test_allowed_origins_on_a_public_key(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        made = await create(
            client,
            acc.auth,
            keyType="public",
            restrictions={"allowedOrigins": ["https://App.Example.com:443", "https://*.acme.com"]},
        )
        assert made["restrictions"] == {
            "allowedOrigins": ["https://*.acme.com", "https://app.example.com"]
        }

    async def test_the_operator_creates_and_imports_restricted_keys(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        made = await client.post(
            f"/admin/accounts/{acc.account_id}/keys",
            headers=admin(runtime),
            json={"name": "op", "keyType": "secret", "scopes": [SEND]},
        )
        assert made.status_code == 201
        assert made.json()["scopes"] == [SEND]
        imported = await client.post(
            f"/admin/accounts/{acc.account_id}/keys/import",
            headers=admin(runtime),
            json={
                "key": "legacy_" + "a1B2c3D4e5" * 3,
                "name": "legacy",
                "keyType": "secret",
                "scopes": [READ],
                "restrictions": {"ipAllowlist": ["198.51.100.0/24"]},
            },
        )
        assert imported.status_code == 201, imported.text
        assert imported.json()["scopes"] == [READ]
        assert imported.json()["restrictions"] == {"ipAllowlist": ["198.51.100.0/24"]}
        unknown = await client.post(
            f"/admin/accounts/{acc.account_id}/keys/import",
            headers=admin(runtime),
            json={
                "key": "legacy_" + "z9Y8x7W6v5" * 3,
                "name": "legacy",
                "keyType": "secret",
                "scopes": ["nothing:here"],
            },
        )
        expect_error(unknown, 400, "validation_error")


class TestNoEscalation:
    async def test_a_restricted_key_makes_keys_within_its_own(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        _, parent = await restricted_key(
            client,
            acc,
            scopes=["keys:write", SEND, READ],
            restrictions={
                "ipAllowlist": ["127.0.0.0/8"],
                "attributes": {"senderDomain": ["acme.com", "acme.org"]},
            },
        )
        child = await create(
            client,
            parent,
            scopes=[SEND],
            restrictions={
                "ipAllowlist": ["127.0.0.1/32"],
                "attributes": {"senderDomain": ["acme.com"], "channel": ["email"]},
            },
        )
        assert child["scopes"] == [SEND]

    @pytest.mark.parametrize(
        ("body", "wider"),
        [
            ({"scopes": ["keys:write", "keys:read"]}, "keys:read"),
            ({"scopes": ["messages:*"]}, "messages:*"),
            ({"scopes": [SEND], "restrictions": {"ipAllowlist": ["10.0.0.0/8"]}}, "10.0.0.0/8"),
            ({"scopes": [SEND], "restrictions": {"ipAllowlist": ["0.0.0.0/0"]}}, "0.0.0.0/0"),
            ({"scopes": [SEND], "restrictions": {}}, "any address"),
            (
                {
                    "scopes": [SEND],
                    "restrictions": {
                        "ipAllowlist": ["127.0.0.1/32"],
                        "attributes": {"senderDomain": ["evil.com"]},
                    },
                },
                "evil.com",
            ),
            (
                {"scopes": [SEND], "restrictions": {"ipAllowlist": ["127.0.0.1/32"]}},
                "senderDomain",
            ),
        ],
    )
    async def test_wider_than_itself_is_403_scope_escalation(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,
        body: dict[str, Any],
        wider: str,
    ) -> None:
        _, parent = await restricted_key(
            client,
            acc,
            scopes=["keys:write", SEND],
            restrictions={
                "ipAllowlist": ["127.0.0.0/8"],
                "attributes": {"senderDomain": ["acme.com"]},
            },
        )
        resp = await client.post(
            "/keys", headers=parent, json={"name": "child", "keyType": "secret", **body}
        )
        error = expect_error(resp, 403, "scope_escalation")["error"]
        assert wider in error["message"], error["message"]
        assert error["fix"]
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert [k["name"] for k in listed].count("child") == 0

    async def test_left_out_they_are_the_callers_own(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        restrictions = {"ipAllowlist": ["127.0.0.0/8"]}
        _, parent = await restricted_key(
            client, acc, scopes=["keys:write", SEND], restrictions=restrictions
        )
        child = await create(client, parent)
        assert child["scopes"] == ["keys:write", SEND]
        assert child["restrictions"] == restrictions
        only_scopes = await create(client, parent, scopes=[SEND])
        assert only_scopes["restrictions"] == restrictions

    async def test_an_environment_scoped_unrestricted_key_is_not_limited_by_scopes(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        env = await create_environment(runtime, acc.account_id, "staging")
        _, scoped = await restricted_key(client, acc, environmentId=env.id)
        child = await create(client, scoped, scopes=[SEND])
        assert child["environmentId"] == env.id

    async def test_a_restricted_key_rolls_only_keys_within_its_own(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        _, parent = await restricted_key(client, acc, scopes=["keys:write", SEND])
        within = await create(client, acc.auth, scopes=[SEND])
        wider = await create(client, acc.auth, scopes=[SEND, READ])
        rolled = await client.post(f"/keys/{within['id']}/roll", headers=parent)
        assert rolled.status_code == 201
        refused = await client.post(f"/keys/{wider['id']}/roll", headers=parent)
        expect_error(refused, 403, "scope_escalation")
        unrestricted = await client.post(f"/keys/{acc.key_id}/roll", headers=parent)
        expect_error(unrestricted, 403, "scope_escalation")
        # A refused roll changed nothing: the key is still rollable.
        again = await client.post(f"/keys/{wider['id']}/roll", headers=acc.auth)
        assert again.status_code == 201


class TestRoll:
    async def test_the_new_key_keeps_scopes_and_restrictions(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        restrictions = {"ipAllowlist": ["203.0.113.0/24"]}
        made = await create(client, acc.auth, scopes=[SEND], restrictions=restrictions)
        rolled = await client.post(f"/keys/{made['id']}/roll", headers=acc.auth)
        assert rolled.status_code == 201
        assert rolled.json()["scopes"] == [SEND]
        assert rolled.json()["restrictions"] == restrictions
        again = await client.post(f"/admin/keys/{rolled.json()['id']}/roll", headers=admin(runtime))
        assert again.status_code == 201
        assert again.json()["scopes"] == [SEND]
        assert again.json()["restrictions"] == restrictions


class TestUpdate:
    async def test_narrowing_is_open_to_a_key_that_may_write_keys(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        target = await create(client, acc.auth, scopes=[SEND, READ])
        _, writer = await restricted_key(client, acc, scopes=["keys:write"])
        resp = await client.patch(
            f"/keys/{target['id']}",
            headers=writer,
            json={"scopes": [SEND], "restrictions": {"ipAllowlist": ["203.0.113.0/24"]}},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["scopes"] == [SEND]
        assert resp.json()["restrictions"] == {"ipAllowlist": ["203.0.113.0/24"]}
        events = [e for e in await committed_events(runtime, acc.account_id)]
        [updated] = [e for e in events if e.type == "key.updated"]
        assert updated.key_id == target["id"]
        assert updated.data == {
            "before": {"scopes": [READ, SEND], "restrictions": None},
            "after": {"scopes": [SEND], "restrictions": {"ipAllowlist": ["203.0.113.0/24"]}},
        }
        listed = await client.get("/events", headers=acc.auth)
        [shown] = [e for e in listed.json()["events"] if e["type"] == "key.updated"]
        assert shown["data"]["after"]["scopes"] == [SEND]

    @pytest.mark.parametrize(
        "change",
        [
            {"scopes": [SEND, READ, "keys:read"]},
            {"scopes": None},
            {"restrictions": None},
            {"restrictions": {}},
            {"restrictions": {"ipAllowlist": ["203.0.112.0/23"]}},
        ],
    )
    async def test_widening_needs_an_unrestricted_account_wide_key(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        acc: AccountWithKey,
        change: dict[str, Any],
    ) -> None:
        env = await create_environment(runtime, acc.account_id, "staging")
        body: dict[str, Any] = {
            "scopes": [SEND, READ],
            "restrictions": {"ipAllowlist": ["203.0.113.0/24"]},
        }
        target = await create(client, acc.auth, environmentId=env.id, **body)
        _, writer = await restricted_key(client, acc, scopes=["keys:write"])
        _, env_key = await restricted_key(client, acc, environmentId=env.id)
        for auth in (writer, env_key):
            resp = await client.patch(f"/keys/{target['id']}", headers=auth, json=change)
            error = expect_error(resp, 403, "scope_escalation")["error"]
            assert "unrestricted account-wide secret key" in error["message"]
            assert error["fix"]
        unchanged = (await client.get(f"/keys/{target['id']}", headers=acc.auth)).json()
        assert unchanged["scopes"] == [READ, SEND]
        widened = await client.patch(f"/keys/{target['id']}", headers=acc.auth, json=change)
        assert widened.status_code == 200, widened.text
        by_operator = await client.patch(
            f"/admin/keys/{target['id']}", headers=admin(runtime), json=body
        )
        assert by_operator.status_code == 200
        assert by_operator.json()["scopes"] == [READ, SEND]

    async def test_null_makes_the_key_unrestricted_and_the_object_the_seeds(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        target = await create(
            client, acc.auth, scopes=[SEND], restrictions={"ipAllowlist": ["203.0.113.0/24"]}
        )
        resp = await client.patch(
            f"/keys/{target['id']}", headers=acc.auth, json={"scopes": None, "restrictions": None}
        )
        assert resp.status_code == 200
        assert "scopes" not in resp.json()
        assert "restrictions" not in resp.json()

    async def test_name_and_scopes_together_and_no_change_records_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, acc: AccountWithKey
    ) -> None:
        target = await create(client, acc.auth, scopes=[SEND, READ])
        resp = await client.patch(
            f"/keys/{target['id']}", headers=acc.auth, json={"name": "sender", "scopes": [SEND]}
        )
        assert resp.status_code == 200
        assert resp.json()["name"] == "sender"
        same = await client.patch(
            f"/keys/{target['id']}", headers=acc.auth, json={"scopes": [SEND, SEND]}
        )
        assert same.status_code == 200
        types = [e.type for e in await committed_events(runtime, acc.account_id)]
        assert types.count("key.updated") == 1
        assert types.count("key.renamed") == 1

    @pytest.mark.parametrize(
        "body",
        [{}, {"revoked": True}, {"keyType": "public"}, {"scopes": ["nothing:here"]}],
    )
    async def test_bad_patches_are_400(
        self, client: httpx.AsyncClient, acc: AccountWithKey, body: dict[str, Any]
    ) -> None:
        resp = await client.patch(f"/keys/{acc.key_id}", headers=acc.auth, json=body)
        expect_error(resp, 400, "validation_error")

    async def test_origins_stay_for_public_keys(
        self, client: httpx.AsyncClient, acc: AccountWithKey
    ) -> None:
        resp = await client.patch(
            f"/keys/{acc.key_id}",
            headers=acc.auth,
            json={"restrictions": {"allowedOrigins": ["https://app.example.com"]}},
        )
        expect_error(resp, 400, "validation_error")
