"""Key lifecycle through the real app: rename, expiry and roll.

No full key reaches the test output: keys are compared with
``expect_same_key``, key objects are compared without their ``key`` member,
and failure messages go through ``scrub``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from keyhouse import errors
from keyhouse.app import create_app
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    create_environment,
    create_key,
    expect_same_key,
    raises,
    set_expiry,
)
from tests.factories import expect_error as check_error
from tests.limits.conftest import served

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
_KEYLIKE = re.compile(r"(sk_|pk_)[0-9A-Za-z]{8,}")
ONE_MS = timedelta(milliseconds=1)


def scrub(text: object) -> str:
    """Text fit for a failure message: anything key-like is masked."""
    return _KEYLIKE.sub(lambda m: f"{m.group(1)}…{m.group(0)[-4:]}", str(text))


def without_key(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "key"}


def has_expiry(obj: dict[str, Any]) -> bool:
    """Whether a key object carries expiresAt.

    Call it outside ``assert``: pytest would print its argument, a key object.
    """
    return "expiresAt" in obj


async def expires_at(client: httpx.AsyncClient, auth: dict[str, str], key_id: str) -> str | None:
    """The key's expiresAt as GET /keys/{id} shows it (None when omitted)."""
    value: str | None = (await get_key(client, auth, key_id)).get("expiresAt")
    return value


def parse_ts(value: str) -> datetime:
    assert TIMESTAMP.match(value), value
    return datetime.fromisoformat(value)


async def get_key(client: httpx.AsyncClient, auth: dict[str, str], key_id: str) -> dict[str, Any]:
    resp = await client.get(f"/keys/{key_id}", headers=auth)
    status = resp.status_code
    assert status == 200, scrub(resp.text)
    body: dict[str, Any] = resp.json()
    return body


async def key_ids(client: httpx.AsyncClient, auth: dict[str, str]) -> list[str]:
    resp = await client.get("/keys", headers=auth)
    status = resp.status_code
    assert status == 200, scrub(resp.text)
    return [k["id"] for k in resp.json()["keys"]]


async def expect_works(client: httpx.AsyncClient, key: str) -> None:
    resp = await client.get("/keys", headers=bearer(key))
    status = resp.status_code
    assert status == 200, scrub(resp.text)


async def expect_expired(client: httpx.AsyncClient, key: str) -> None:
    expect_error(await client.get("/keys", headers=bearer(key)), 401, "expired_api_key")


async def set_expires_at(runtime: Runtime, key_id: str, when: datetime) -> None:
    await set_expiry(runtime, key_id, when)


async def expired_events(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    resp = await client.get("/events?limit=100", headers=auth)
    status = resp.status_code
    assert status == 200, scrub(resp.text)
    return [e for e in resp.json()["events"] if e["type"] == "key.expired"]


FOREIGN_MEMBERS: list[tuple[str, Any]] = [
    ("revoked", True),
    ("key", "sk_" + "A" * 49),  # key-shaped, not a key
    ("accountId", "acc_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
    ("keyType", "public"),
    ("environmentId", "env_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
    ("expiresAt", "2099-01-01T00:00:00Z"),
    ("id", "key_01HZZZZZZZZZZZZZZZZZZZZZZZ"),
    ("createdAt", "2020-01-01T00:00:00Z"),
    ("lastUsedAt", "2020-01-01T00:00:00Z"),
]


def names(message: str, member: str) -> bool:
    """The message names the member as a word ("id" is not named by "Invalid")."""
    return re.search(rf"\b{re.escape(member)}\b", message) is not None


# -- rename -------------------------------------------------------------------------


class TestRename:
    async def test_changes_the_name_and_nothing_else(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        target = await create_key(
            runtime,
            acc.account_id,
            key_type="public",
            name="old name",
            environment_id=env.id,
            expires_at=datetime.now(UTC) + timedelta(days=3),
        )
        before = await get_key(client, acc.auth, target.row.id)

        resp = await client.patch(
            f"/keys/{target.row.id}", headers=acc.auth, json={"name": "new name"}
        )
        status = resp.status_code
        assert status == 200, scrub(resp.text)
        body = resp.json()
        assert body["name"] == "new name"
        expect_same_key(body["key"], target.plaintext)
        changed, expected = without_key(body), {**without_key(before), "name": "new name"}
        assert changed == expected

        after = await get_key(client, acc.auth, target.row.id)
        shown = without_key(after)
        assert shown == changed
        expect_same_key(after["key"], target.plaintext)

    async def test_renamed_key_still_authenticates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.patch(f"/keys/{acc.key_id}", headers=acc.auth, json={"name": "mine"})
        assert resp.status_code == 200
        assert resp.json()["name"] == "mine"
        await expect_works(client, acc.key)

    @pytest.mark.parametrize(
        "name", ["x", "y" * 100, "Clé de prod ✓ (eu-west)", "日本語の名前", "a b  c"]
    )
    async def test_valid_names(
        self, client: httpx.AsyncClient, runtime: Runtime, name: str
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id)
        resp = await client.patch(f"/keys/{target.row.id}", headers=acc.auth, json={"name": name})
        assert resp.status_code == 200, scrub(resp.text)
        assert resp.json()["name"] == name
        assert (await get_key(client, acc.auth, target.row.id))["name"] == name

    async def test_invalid_names_are_400_and_change_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="keep me")
        bad: list[Any] = [
            {"name": ""},
            {"name": "z" * 101},
            {"name": "line\nbreak"},
            {"name": "tab\there"},
            {"name": "bell\x07"},
            {"name": "del\x7f"},
            {"name": None},
            {"name": 5},
            {"name": ["a"]},
            {},
            [],
            "just a string",
        ]
        for body in bad:
            resp = await client.patch(f"/keys/{target.row.id}", headers=acc.auth, json=body)
            error = expect_error(resp, 400, "validation_error")
            assert error["message"], body
        assert (await get_key(client, acc.auth, target.row.id))["name"] == "keep me"

    @pytest.mark.parametrize(
        ("member", "value"), FOREIGN_MEMBERS, ids=[m for m, _ in FOREIGN_MEMBERS]
    )
    async def test_other_members_are_refused_by_name(
        self, client: httpx.AsyncClient, runtime: Runtime, member: str, value: Any
    ) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="keep me")
        before = await get_key(client, acc.auth, target.row.id)
        resp = await client.patch(
            f"/keys/{target.row.id}", headers=acc.auth, json={"name": "changed", member: value}
        )
        error = expect_error(resp, 400, "validation_error")
        message = str(error["message"])
        assert names(message, member), f"message does not name {member!r}: {scrub(message)}"
        after = await get_key(client, acc.auth, target.row.id)
        now, then = without_key(after), without_key(before)
        assert now == then
        expect_same_key(after["key"], target.plaintext)
        await expect_works(client, target.plaintext)

    async def test_other_member_alone_is_refused_by_name(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        # Without a name, the refusal still names the member that cannot be set.
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="keep me")
        before = await get_key(client, acc.auth, target.row.id)
        unnamed: list[str] = []
        for member, value in FOREIGN_MEMBERS:
            resp = await client.patch(
                f"/keys/{target.row.id}", headers=acc.auth, json={member: value}
            )
            error = expect_error(resp, 400, "validation_error")
            if not names(str(error["message"]), member):
                unnamed.append(f"{member}: {scrub(error['message'])}")
        after = await get_key(client, acc.auth, target.row.id)
        now, then = without_key(after), without_key(before)
        assert now == then
        assert unnamed == [], "messages that do not name the member"

    async def test_another_accounts_or_unknown_key_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        for key_id in [other.key_id, "key_doesnotexist"]:
            resp = await client.patch(f"/keys/{key_id}", headers=acc.auth, json={"name": "hijack"})
            expect_error(resp, 404, "not_found")
        assert (await get_key(client, other.auth, other.key_id))["name"] != "hijack"

    async def test_scoped_key_renames_only_its_environment(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        prod = await create_environment(runtime, acc.account_id, "production")
        staging = await create_environment(runtime, acc.account_id, "staging")
        prod_key = await create_key(runtime, acc.account_id, environment_id=prod.id, name="p")
        staging_key = await create_key(runtime, acc.account_id, environment_id=staging.id)
        neighbour = await create_key(runtime, acc.account_id, environment_id=staging.id)
        auth = bearer(staging_key.plaintext)

        for key_id in [prod_key.row.id, acc.key_id]:
            resp = await client.patch(f"/keys/{key_id}", headers=auth, json={"name": "x"})
            expect_error(resp, 404, "not_found")
        assert (await get_key(client, acc.auth, prod_key.row.id))["name"] == "p"
        assert (await get_key(client, acc.auth, acc.key_id))["name"] != "x"

        resp = await client.patch(f"/keys/{neighbour.row.id}", headers=auth, json={"name": "ok"})
        assert resp.status_code == 200
        assert resp.json()["name"] == "ok"

    async def test_public_key_cannot_rename(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        pub = await create_key(runtime, acc.account_id, key_type="public", name="pub")
        resp = await client.patch(
            f"/keys/{pub.row.id}", headers=bearer(pub.plaintext), json={"name": "x"}
        )
        expect_error(resp, 403, "insufficient_permissions")
        assert (await get_key(client, acc.auth, pub.row.id))["name"] == "pub"


# -- expiry -------------------------------------------------------------------------


class TestExpiry:
    async def test_created_with_expiry_carries_expires_at(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.post(
            "/keys",
            headers=acc.auth,
            json={"name": "n", "keyType": "secret", "expiresAt": "2099-06-01T12:30:00.250-05:00"},
        )
        assert resp.status_code == 201, scrub(resp.text)
        created = resp.json()
        assert created["expiresAt"] == "2099-06-01T17:30:00.250Z"
        shown = await get_key(client, acc.auth, created["id"])
        assert shown["expiresAt"] == "2099-06-01T17:30:00.250Z"
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        by_id = {k["id"]: k for k in listed}
        assert by_id[created["id"]]["expiresAt"] == "2099-06-01T17:30:00.250Z"
        await expect_works(client, created["key"])

    async def test_expires_at_omitted_when_absent(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        resp = await client.post("/keys", headers=acc.auth, json={"name": "n", "keyType": "secret"})
        assert resp.status_code == 201
        in_response = has_expiry(resp.json())
        assert not in_response
        assert await expires_at(client, acc.auth, resp.json()["id"]) is None
        listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
        assert not any(has_expiry(k) for k in listed)

    async def test_bad_expires_at_is_400_and_stores_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat()
        bad: list[Any] = [
            "2099-01-01T00:00:00",  # no zone
            "2099-01-01",
            past,
            "2001-01-01T00:00:00Z",
            "tomorrow",
            "",
            12345,
        ]
        for value in bad:
            resp = await client.post(
                "/keys",
                headers=acc.auth,
                json={"name": "n", "keyType": "secret", "expiresAt": value},
            )
            expect_error(resp, 400, "validation_error")
        assert await key_ids(client, acc.auth) == [acc.key_id]

    async def test_expired_key_is_refused_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        soon = await create_key(
            runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
        # Used (and so possibly cached) while valid...
        await expect_works(client, soon.plaintext)
        await expect_works(client, soon.plaintext)
        # ...then its moment comes: the very next use is refused (no cache).
        await set_expires_at(runtime, soon.row.id, datetime.now(UTC))
        await expect_expired(client, soon.plaintext)
        await set_expires_at(runtime, soon.row.id, datetime.now(UTC) - timedelta(seconds=1))
        await expect_expired(client, soon.plaintext)
        # Another key of the account is unaffected.
        await expect_works(client, acc.key)
        # Expired is not revoked.
        shown = await get_key(client, acc.auth, soon.row.id)
        assert shown["revoked"] is False
        assert parse_ts(shown["expiresAt"]) <= datetime.now(UTC)

    async def test_key_not_yet_expired_works(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        soon = await create_key(runtime, acc.account_id)
        await set_expires_at(runtime, soon.row.id, datetime.now(UTC) + timedelta(seconds=30))
        await expect_works(client, soon.plaintext)

    async def test_expired_key_records_one_event(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        soon = await create_key(
            runtime,
            acc.account_id,
            environment_id=env.id,
            expires_at=datetime.now(UTC) + timedelta(hours=1),
        )
        await expect_works(client, soon.plaintext)
        assert await expired_events(client, acc.auth) == []
        await set_expires_at(runtime, soon.row.id, datetime.now(UTC) - timedelta(seconds=1))
        for _ in range(3):
            await expect_expired(client, soon.plaintext)
        events = await expired_events(client, acc.auth)
        assert len(events) == 1, events
        assert events[0]["keyId"] == soon.row.id
        assert events[0]["environmentId"] == env.id

    async def test_concurrent_uses_record_one_event(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        soon = await create_key(runtime, acc.account_id)
        await set_expires_at(runtime, soon.row.id, datetime.now(UTC) - timedelta(seconds=1))
        responses = await asyncio.gather(
            *(client.get("/keys", headers=bearer(soon.plaintext)) for _ in range(6))
        )
        for resp in responses:
            expect_error(resp, 401, "expired_api_key")
        await expect_expired(client, soon.plaintext)
        events = await expired_events(client, acc.auth)
        assert [e["keyId"] for e in events] == [soon.row.id]


# -- roll -----------------------------------------------------------------------------


class TestRoll:
    async def roll(
        self,
        client: httpx.AsyncClient,
        auth: dict[str, str],
        key_id: str,
        body: Any = None,
    ) -> tuple[dict[str, Any], datetime, datetime]:
        """Roll; the new key object and the clock just before and after the request."""
        before = datetime.now(UTC)
        if body is None:
            resp = await client.post(f"/keys/{key_id}/roll", headers=auth)
        else:
            resp = await client.post(f"/keys/{key_id}/roll", headers=auth, json=body)
        after = datetime.now(UTC)
        status = resp.status_code
        assert status == 201, f"status {status}: {scrub(resp.text)}"
        new: dict[str, Any] = resp.json()
        return new, before, after

    @staticmethod
    def expect_grace(expires_at: str, before: datetime, after: datetime, seconds: int) -> None:
        when = parse_ts(expires_at)
        low = before + timedelta(seconds=seconds) - ONE_MS  # milliseconds are truncated
        high = after + timedelta(seconds=seconds)
        assert low <= when <= high, f"{expires_at} not in [{low}, {high}]"

    async def test_new_key_has_same_name_type_scope_and_expiry(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "production")
        expires = datetime.now(UTC) + timedelta(days=10)
        old = await create_key(
            runtime,
            acc.account_id,
            key_type="public",
            name="web widget",
            environment_id=env.id,
            expires_at=expires,
        )
        old_before = await get_key(client, acc.auth, old.row.id)

        new, before, after = await self.roll(
            client, acc.auth, old.row.id, {"expiresInSeconds": 3600}
        )
        assert new["id"] != old.row.id
        assert new["id"].startswith("key_")
        same_string = new["key"] == old.plaintext
        assert not same_string, "the rolled key has the old key string"
        public_shape = new["key"].startswith("pk_")
        public_shape = public_shape and runtime.key_format.parse(new["key"]).key_type == "public"
        assert public_shape, f"not a public key: {scrub(new['key'])}"
        assert new["name"] == "web widget"
        assert new["keyType"] == "public"
        assert new["environmentId"] == env.id
        assert new["accountId"] == acc.account_id
        assert new["revoked"] is False
        assert new["expiresAt"] == old_before["expiresAt"]
        assert TIMESTAMP.match(new["createdAt"])

        # The new key is stored as returned.
        shown = await get_key(client, acc.auth, new["id"])
        expect_same_key(shown["key"], new["key"])
        stored, returned = without_key(shown), without_key(new)
        assert stored == returned

        # The old key ends after the grace period, and is otherwise unchanged.
        old_after = await get_key(client, acc.auth, old.row.id)
        self.expect_grace(old_after["expiresAt"], before, after, 3600)
        rest_after = {k: v for k, v in without_key(old_after).items() if k != "expiresAt"}
        rest_before = {k: v for k, v in without_key(old_before).items() if k != "expiresAt"}
        assert rest_after == rest_before
        expect_same_key(old_after["key"], old.plaintext)

    async def test_body_may_be_omitted_default_one_day(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id, name="backend")
        new, before, after = await self.roll(client, acc.auth, old.row.id)
        new_expires = has_expiry(new)
        assert not new_expires
        assert new["name"] == "backend"
        assert new["keyType"] == "secret"
        assert "environmentId" not in new
        old_after = await get_key(client, acc.auth, old.row.id)
        self.expect_grace(old_after["expiresAt"], before, after, 86_400)

        # An empty JSON object takes the default too.
        other = await create_key(runtime, acc.account_id)
        _, before, after = await self.roll(client, acc.auth, other.row.id, {})
        self.expect_grace(
            (await get_key(client, acc.auth, other.row.id))["expiresAt"], before, after, 86_400
        )

    async def test_both_keys_work_during_grace(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        new, _, _ = await self.roll(client, acc.auth, old.row.id, {"expiresInSeconds": 600})
        await expect_works(client, old.plaintext)
        await expect_works(client, new["key"])
        # Once the grace period is over, only the new key works.
        await set_expires_at(runtime, old.row.id, datetime.now(UTC) - timedelta(seconds=1))
        await expect_expired(client, old.plaintext)
        await expect_works(client, new["key"])

    async def test_zero_grace_ends_the_old_key_at_once(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        await expect_works(client, old.plaintext)
        new, before, after = await self.roll(client, acc.auth, old.row.id, {"expiresInSeconds": 0})
        await expect_expired(client, old.plaintext)
        await expect_works(client, new["key"])
        old_after = await get_key(client, acc.auth, old.row.id)
        self.expect_grace(old_after["expiresAt"], before, after, 0)
        assert old_after["revoked"] is False

    async def test_maximum_grace(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        _, before, after = await self.roll(
            client, acc.auth, old.row.id, {"expiresInSeconds": 604_800}
        )
        old_after = await get_key(client, acc.auth, old.row.id)
        self.expect_grace(old_after["expiresAt"], before, after, 604_800)

    async def test_roll_never_extends_a_keys_life(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(
            runtime, acc.account_id, expires_at=datetime.now(UTC) + timedelta(hours=1)
        )
        original = (await get_key(client, acc.auth, old.row.id))["expiresAt"]
        new, _, _ = await self.roll(client, acc.auth, old.row.id, {"expiresInSeconds": 86_400})
        assert (await get_key(client, acc.auth, old.row.id))["expiresAt"] == original
        assert new["expiresAt"] == original
        # A grace shorter than the remaining life does shorten it.
        newer, before, after = await self.roll(
            client, acc.auth, new["id"], {"expiresInSeconds": 60}
        )
        assert newer["expiresAt"] == original
        self.expect_grace(
            (await get_key(client, acc.auth, new["id"]))["expiresAt"], before, after, 60
        )

    async def test_rolling_the_calling_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        new, _, _ = await self.roll(client, acc.auth, acc.key_id, {"expiresInSeconds": 60})
        await expect_works(client, acc.key)
        await expect_works(client, new["key"])
        assert new["name"] == (await get_key(client, acc.auth, acc.key_id))["name"]

    async def test_revoked_or_expired_key_is_409(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        revoked = await create_key(runtime, acc.account_id)
        resp = await client.post(f"/keys/{revoked.row.id}/revoke", headers=acc.auth)
        assert resp.status_code == 200
        expired = await create_key(runtime, acc.account_id)
        await set_expires_at(runtime, expired.row.id, datetime.now(UTC) - timedelta(seconds=1))
        rolled_to_zero = await create_key(runtime, acc.account_id)
        await self.roll(client, acc.auth, rolled_to_zero.row.id, {"expiresInSeconds": 0})
        ids_before = await key_ids(client, acc.auth)

        for key_id in [revoked.row.id, expired.row.id, rolled_to_zero.row.id]:
            for body in [None, {"expiresInSeconds": 60}]:
                if body is None:
                    resp = await client.post(f"/keys/{key_id}/roll", headers=acc.auth)
                else:
                    resp = await client.post(f"/keys/{key_id}/roll", headers=acc.auth, json=body)
                expect_error(resp, 409, "conflict")
        assert await key_ids(client, acc.auth) == ids_before
        assert await expires_at(client, acc.auth, revoked.row.id) is None

    @pytest.mark.parametrize("grace", [-1, 604_801, "x"])
    async def test_bad_grace_is_400_and_changes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, grace: Any
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        ids_before = await key_ids(client, acc.auth)
        resp = await client.post(
            f"/keys/{old.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": grace}
        )
        error = expect_error(resp, 400, "validation_error")
        assert "expiresInSeconds" in error["message"]
        assert await key_ids(client, acc.auth) == ids_before
        assert await expires_at(client, acc.auth, old.row.id) is None
        await expect_works(client, old.plaintext)

    async def test_another_accounts_or_unknown_key_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        for key_id in [other.key_id, "key_doesnotexist"]:
            resp = await client.post(f"/keys/{key_id}/roll", headers=acc.auth)
            expect_error(resp, 404, "not_found")
        assert await key_ids(client, other.auth) == [other.key_id]
        assert await expires_at(client, other.auth, other.key_id) is None

    async def test_scoped_key_rolls_only_its_environment(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        prod = await create_environment(runtime, acc.account_id, "production")
        staging = await create_environment(runtime, acc.account_id, "staging")
        prod_key = await create_key(runtime, acc.account_id, environment_id=prod.id)
        staging_key = await create_key(runtime, acc.account_id, environment_id=staging.id)
        neighbour = await create_key(runtime, acc.account_id, environment_id=staging.id)
        auth = bearer(staging_key.plaintext)
        ids_before = await key_ids(client, acc.auth)

        for key_id in [prod_key.row.id, acc.key_id]:
            resp = await client.post(f"/keys/{key_id}/roll", headers=auth)
            expect_error(resp, 404, "not_found")
            assert await expires_at(client, acc.auth, key_id) is None
        assert await key_ids(client, acc.auth) == ids_before

        new, _, _ = await self.roll(client, auth, neighbour.row.id, {"expiresInSeconds": 60})
        assert new["environmentId"] == staging.id

    async def test_public_key_cannot_roll(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        pub = await create_key(runtime, acc.account_id, key_type="public")
        resp = await client.post(f"/keys/{pub.row.id}/roll", headers=bearer(pub.plaintext))
        expect_error(resp, 403, "insufficient_permissions")
        assert await key_ids(client, acc.auth) == [pub.row.id, acc.key_id]


def expect_error(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The envelope with this status and code (tests/factories.py); its error."""
    __tracebackhide__ = True
    error: dict[str, Any] = check_error(resp, status, code)["error"]
    return error


async def events_of(client: httpx.AsyncClient, auth: dict[str, str]) -> list[dict[str, Any]]:
    resp = await client.get("/events", headers=auth, params={"limit": 100})
    assert resp.status_code == 200
    events: list[dict[str, Any]] = resp.json()["events"]
    return events


class TestRollARolledKey:
    """A key in its grace period was rolled already: rolling it again is 409.

    Its replacement inherited its original expiry; a second replacement would
    inherit the shortened one and die at the end of the first grace period.
    """

    async def test_second_roll_is_409_naming_the_new_key_and_changes_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        first = await client.post(
            f"/keys/{old.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 3600}
        )
        assert first.status_code == 201
        new_id = first.json()["id"]
        ids_before = await key_ids(client, acc.auth)
        old_before = without_key(await get_key(client, acc.auth, old.row.id))
        events_before = await events_of(client, acc.auth)

        for body in [None, {"expiresInSeconds": 60}, {"expiresInSeconds": 0}]:
            if body is None:
                resp = await client.post(f"/keys/{old.row.id}/roll", headers=acc.auth)
            else:
                resp = await client.post(f"/keys/{old.row.id}/roll", headers=acc.auth, json=body)
            error = expect_error(resp, 409, "conflict")
            assert new_id in error["message"]
            assert f"POST /keys/{new_id}/roll" in error["fix"]

        assert await key_ids(client, acc.auth) == ids_before
        assert without_key(await get_key(client, acc.auth, old.row.id)) == old_before
        assert await events_of(client, acc.auth) == events_before
        # The old key still works until its grace ends; the new one can be rolled.
        await expect_works(client, old.plaintext)
        newer = await client.post(f"/keys/{new_id}/roll", headers=acc.auth)
        assert newer.status_code == 201

    async def test_a_key_rolled_by_the_cli_or_the_operator_counts_too(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        old = await create_key(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            issued = await KeyService(session, runtime).roll(None, old.row.id, actor=CLI)
        async with runtime.db.session(write=True) as session:
            with raises(errors.KeyAlreadyRolled, "conflict") as caught:
                await KeyService(session, runtime).roll(None, old.row.id, actor=CLI)
        assert issued.row.id in caught.value.message
        resp = await client.post(f"/keys/{old.row.id}/roll", headers=acc.auth)
        expect_error(resp, 409, "conflict")


async def test_concurrent_rolls_of_one_key_make_one_replacement(
    make_settings: Callable[..., Settings],
) -> None:
    """Several rolls of one key at once, spread over two processes: one 201, the rest 409.

    On PostgreSQL each roll read the key as not rolled yet (READ COMMITTED)
    and made a replacement, until the roll took the account's row lock and
    read the key again.
    """
    settings = make_settings()
    app = create_app(settings)
    targets: list[tuple[AccountWithKey, str]] = []
    async with app.router.lifespan_context(app):
        setup: Runtime = app.state.runtime
        for _ in range(6):
            acc = await create_account(setup)
            key = await create_key(setup, acc.account_id)
            targets.append((acc, key.row.id))
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=30) as http:

            async def race(acc: AccountWithKey, key_id: str) -> list[int]:
                answers = await asyncio.gather(
                    *(
                        http.post(f"{urls[i % 2]}/keys/{key_id}/roll", headers=acc.auth)
                        for i in range(4)
                    )
                )
                for answer in answers:
                    if answer.status_code != 201:
                        expect_error(answer, 409, "conflict")
                return sorted(a.status_code for a in answers)

            results = await asyncio.gather(*(race(*target) for target in targets))
            counts = []
            for acc, _ in targets:
                listed = await http.get(f"{urls[0]}/keys", headers=acc.auth)
                counts.append(len(listed.json()["keys"]))
    assert results == [[201, 409, 409, 409]] * len(targets)
    assert counts == [3] * len(targets)  # the first key, the rolled one, one replacement
