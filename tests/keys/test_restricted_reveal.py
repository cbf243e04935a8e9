"""A restricted key never reads the full string of a key wider than itself (review r15).

With the default ``KEYHOUSE_LIST_REVEALS_KEYS=true`` a ``keys:read`` key listed
the account's unrestricted secret key in full, and a ``keys:write`` key read it
from a no-op PATCH or a revoke's answer: the no-escalation rule, bypassed by
reading instead of creating. The rule (keys/presenter.py): a restricted caller
sees an existing secret key in full only when it is within its own power; the
operator and unrestricted keys see as before. Every route that answers with a
key object, on both engines.
"""

from __future__ import annotations

from typing import Any

import httpx

from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer
from tests.keys.test_restricted_keys import SEND, acc, admin, create  # noqa: F401  (fixture)


def masked(shown: str, full: str) -> bool:
    """``shown`` is a mask of ``full``: not the key, and not a piece of it longer than a hint."""
    return shown != full and len(shown) < len(full)


async def _keys(client: httpx.AsyncClient, auth: dict[str, str], **params: str) -> dict[str, str]:
    resp = await client.get("/keys", headers=auth, params=params)
    assert resp.status_code == 200, resp.text
    return {k["id"]: k["key"] for k in resp.json()["keys"]}


async def _narrow_and_wide(
    client: httpx.AsyncClient,
    acc: AccountWithKey,  # noqa: F811
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A key within ``keys:read``+SEND (narrow), an unrestricted one (wide), a public one."""
    narrow = await create(client, acc.auth, name="narrow", scopes=[SEND])
    wide = await create(client, acc.auth, name="wide")
    public = await create(client, acc.auth, name="pub", keyType="public")
    return narrow, wide, public


class TestKeysRead:
    async def test_list_masks_wider_secret_keys_and_shows_the_rest(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        narrow, wide, public = await _narrow_and_wide(client, acc)
        reader = await create(client, acc.auth, name="reader", scopes=["keys:read", SEND])
        auth = bearer(reader["key"])
        for params in ({}, {"keyType": "secret"}, {"revoked": "false"}):
            shown = await _keys(client, auth, **params)
            assert masked(shown[acc.key_id], acc.key), params
            assert masked(shown[wide["id"]], wide["key"]), params
            assert shown[narrow["id"]] == narrow["key"], params  # within its power
            assert shown[reader["id"]] == reader["key"], params  # itself
            if "keyType" not in params:
                assert shown[public["id"]] == public["key"], params  # public keys only verify

    async def test_get_masks_a_wider_key(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        narrow, _, _ = await _narrow_and_wide(client, acc)
        reader = await create(client, acc.auth, name="reader", scopes=["keys:read", SEND])
        auth = bearer(reader["key"])
        got = await client.get(f"/keys/{acc.key_id}", headers=auth)
        assert got.status_code == 200
        assert masked(got.json()["key"], acc.key)
        got = await client.get(f"/keys/{narrow['id']}", headers=auth)
        assert got.status_code == 200
        assert got.json()["key"] == narrow["key"]

    async def test_an_ip_restricted_key_does_not_see_keys_that_work_from_anywhere(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        # Restrictions alone (no scopes) make a caller restricted too.
        fenced = await create(
            client, acc.auth, name="fenced", restrictions={"ipAllowlist": ["127.0.0.0/8"]}
        )
        inside = await create(
            client, acc.auth, name="inside", restrictions={"ipAllowlist": ["127.0.0.1/32"]}
        )
        shown = await _keys(client, bearer(fenced["key"]))
        assert masked(shown[acc.key_id], acc.key)
        assert shown[inside["id"]] == inside["key"]


class TestKeysWrite:
    async def test_patch_and_revoke_answers_mask_a_wider_key(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        _, wide, _ = await _narrow_and_wide(client, acc)
        writer = bearer((await create(client, acc.auth, name="w", scopes=["keys:write"]))["key"])
        patched = await client.patch(
            f"/keys/{acc.key_id}", headers=writer, json={"name": "Default secret key"}
        )
        assert patched.status_code == 200
        assert masked(patched.json()["key"], acc.key)
        renamed = await client.patch(f"/keys/{wide['id']}", headers=writer, json={"name": "x"})
        assert renamed.status_code == 200
        assert masked(renamed.json()["key"], wide["key"])
        revoked = await client.post(f"/keys/{wide['id']}/revoke", headers=writer)
        assert revoked.status_code == 200
        assert revoked.json()["revoked"] is True
        assert masked(revoked.json()["key"], wide["key"])
        # Narrowing a wider key to within its own: the answer may show it now.
        narrowed = await client.patch(
            f"/keys/{acc.key_id}", headers=writer, json={"scopes": ["keys:write"]}
        )
        assert narrowed.status_code == 200
        assert narrowed.json()["key"] == acc.key

    async def test_what_it_creates_and_rolls_is_shown_in_full(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        writer = bearer((await create(client, acc.auth, name="w", scopes=["keys:write"]))["key"])
        made = await create(client, writer, name="child")
        assert made["scopes"] == ["keys:write"]
        rolled = await client.post(f"/keys/{made['id']}/roll", headers=writer)
        assert rolled.status_code == 201
        assert rolled.json()["key"] != made["key"]
        assert rolled.json()["key"].startswith(made["key"][:3])

    async def test_an_idempotent_create_is_not_replayed_to_another_key(
        self,
        client: httpx.AsyncClient,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        body = {"name": "once", "keyType": "secret", "scopes": ["keys:write"]}
        first_key = bearer((await create(client, acc.auth, name="a", scopes=["keys:write"]))["key"])
        other_key = bearer((await create(client, acc.auth, name="b", scopes=["keys:write"]))["key"])
        idem = {"Idempotency-Key": "r15-replay"}
        first = await client.post("/keys", headers={**first_key, **idem}, json=body)
        again = await client.post("/keys", headers={**first_key, **idem}, json=body)
        other = await client.post("/keys", headers={**other_key, **idem}, json=body)
        assert first.status_code == again.status_code == other.status_code == 201
        assert again.json()["key"] == first.json()["key"]
        assert other.json()["id"] != first.json()["id"]
        assert other.json()["key"] != first.json()["key"]


class TestUnrestrictedAndOperator:
    async def test_they_see_as_before(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        acc: AccountWithKey,  # noqa: F811
    ) -> None:
        narrow, wide, _ = await _narrow_and_wide(client, acc)
        shown = await _keys(client, acc.auth)
        assert shown[acc.key_id] == acc.key
        assert shown[wide["id"]] == wide["key"]
        assert shown[narrow["id"]] == narrow["key"]
        listed = await client.get(f"/admin/accounts/{acc.account_id}/keys", headers=admin(runtime))
        assert listed.status_code == 200
        by_id = {k["id"]: k["key"] for k in listed.json()["keys"]}
        assert by_id[acc.key_id] == acc.key
        assert by_id[wide["id"]] == wide["key"]
        got = await client.get(f"/admin/keys/{acc.key_id}", headers=admin(runtime))
        assert got.status_code == 200
        assert got.json()["key"] == acc.key
