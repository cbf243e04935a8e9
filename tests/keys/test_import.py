"""``POST /admin/accounts/{id}/keys/import``: keys from another system.

No full key or admin token may reach the test output: imported key strings
are built inside the tests (never parametrized), compared with
``expect_same_key`` or a boolean computed first, and the one helper that
sends a key hides its frame from tracebacks.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.format import ALPHABET, Kind
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    create_environment,
    expect_error,
    expect_same_key,
)

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
KEY_ID = re.compile(r"^key_[0-9A-HJKMNP-TV-Z]{26}$")
UNKNOWN_ACCOUNT = "acc_" + "0" * 26
UNKNOWN_ENVIRONMENT = "env_" + "0" * 26
URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._~-"


def foreign_key(length: int = 48) -> str:
    """A key another system might have issued: URL-safe, no keyhouse prefix."""
    body = "".join(secrets.choice(URL_SAFE) for _ in range(length - 4))
    return "ext_" + body


def admin(runtime: Runtime) -> dict[str, str]:
    return bearer(runtime.admin_tokens.first)


async def post_import(
    client: httpx.AsyncClient, runtime: Runtime, account_id: str, body: Any
) -> httpx.Response:
    """POST the import; its frame (whose ``body`` holds a key) stays out of tracebacks."""
    __tracebackhide__ = True
    return await client.post(
        f"/admin/accounts/{account_id}/keys/import", headers=admin(runtime), json=body
    )


async def key_ids(client: httpx.AsyncClient, account: AccountWithKey) -> list[str]:
    """GET /keys with the account's first key: the ids (its frame, holding the key, is hidden)."""
    __tracebackhide__ = True
    response = await client.get("/keys", headers=account.auth)
    assert response.status_code == 200
    return [k["id"] for k in response.json()["keys"]]


async def event_types(client: httpx.AsyncClient, account: AccountWithKey) -> list[str]:
    """GET /events with the account's first key: the types (its frame is hidden)."""
    __tracebackhide__ = True
    response = await client.get("/events", headers=account.auth)
    assert response.status_code == 200
    return [e["type"] for e in response.json()["events"]]


def break_checksum(key: str) -> str:
    """The key with its last (checksum) character changed."""
    __tracebackhide__ = True
    last = ALPHABET[(ALPHABET.index(key[-1]) + 1) % len(ALPHABET)]
    return key[:-1] + last


def stored_in_plaintext(data_dir: Path, key: str) -> list[str]:
    """Which database files hold ``key`` in plaintext (ASCII or UTF-16)."""
    __tracebackhide__ = True
    found = []
    for name in ("keyhouse.db", "keyhouse.db-wal"):
        path = data_dir / name
        if not path.exists():
            continue
        content = path.read_bytes()
        for encoding in ("ascii", "utf-16-le", "utf-16-be"):
            if key.encode(encoding) in content:
                found.append(f"{name} ({encoding})")
    return found


class TestImport:
    async def test_returns_the_key_object(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key()
        response = await post_import(
            client,
            runtime,
            acc.account_id,
            {"key": imported, "name": "legacy backend", "keyType": "secret"},
        )
        assert response.status_code == 201, response.json().get("error")
        body = response.json()
        assert set(body) == {"id", "key", "keyType", "accountId", "name", "revoked", "createdAt"}
        expect_same_key(body["key"], imported)
        assert KEY_ID.match(body["id"])
        assert body["keyType"] == "secret"
        assert body["accountId"] == acc.account_id
        assert body["name"] == "legacy backend"
        assert body["revoked"] is False
        assert TIMESTAMP.match(body["createdAt"])

    async def test_imported_key_authenticates(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key()
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "old", "keyType": "secret"}
        )
        assert response.status_code == 201
        key_id = response.json()["id"]

        listed = await client.get("/keys", headers=bearer(imported))
        assert listed.status_code == 200
        keys = listed.json()["keys"]
        assert [k["id"] for k in keys] == [key_id, acc.key_id]
        expect_same_key(keys[0]["key"], imported)

        mine = await client.get("/account", headers=bearer(imported))
        assert mine.status_code == 200
        assert mine.json()["id"] == acc.account_id

        # The account's native key recovers the imported key (decrypted, not stored plain).
        one = await client.get(f"/keys/{key_id}", headers=acc.auth)
        assert one.status_code == 200
        expect_same_key(one.json()["key"], imported)

    async def test_imported_public_key_authenticates_but_cannot_manage(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key()
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "web", "keyType": "public"}
        )
        assert response.status_code == 201
        assert response.json()["keyType"] == "public"
        # 403, not 401: the key is known, it is only not a secret key.
        expect_error(
            await client.get("/keys", headers=bearer(imported)), 403, "insufficient_permissions"
        )

    async def test_imported_key_cannot_call_the_operator_api(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key()
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "old", "keyType": "secret"}
        )
        assert response.status_code == 201
        refused = await client.get("/admin/accounts", headers=bearer(imported))
        assert refused.status_code in (401, 403)
        expect_error(refused, refused.status_code, refused.json()["error"]["code"])

    @pytest.mark.parametrize("length", [20, 21, 199, 200])
    async def test_lengths_at_the_bounds_are_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime, length: int
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key(length)
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "n", "keyType": "secret"}
        )
        assert response.status_code == 201, response.json().get("error")
        expect_same_key(response.json()["key"], imported)
        ok = await client.get("/keys", headers=bearer(imported))
        assert ok.status_code == 200

    async def test_every_url_safe_character_is_accepted(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = URL_SAFE + secrets.token_hex(8)
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "n", "keyType": "secret"}
        )
        assert response.status_code == 201, response.json().get("error")
        expect_same_key(response.json()["key"], imported)
        ok = await client.get("/keys", headers=bearer(imported))
        assert ok.status_code == 200

    async def test_environment_scoped_import(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        staging = await create_environment(runtime, acc.account_id, "staging")
        imported = foreign_key()
        response = await post_import(
            client,
            runtime,
            acc.account_id,
            {"key": imported, "name": "ci", "keyType": "secret", "environmentId": staging.id},
        )
        assert response.status_code == 201, response.json().get("error")
        key_id = response.json()["id"]
        assert response.json()["environmentId"] == staging.id

        # The scoped key sees only its environment's keys.
        scoped = await client.get("/keys", headers=bearer(imported))
        assert scoped.status_code == 200
        assert [k["id"] for k in scoped.json()["keys"]] == [key_id]
        # The account-wide key finds it by environment.
        filtered = await client.get("/keys", params={"environmentId": staging.id}, headers=acc.auth)
        assert [k["id"] for k in filtered.json()["keys"]] == [key_id]


class TestImportRefused:
    async def test_same_key_twice_is_409(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        imported = foreign_key()
        body = {"key": imported, "name": "old", "keyType": "secret"}
        first = await post_import(client, runtime, acc.account_id, body)
        assert first.status_code == 201
        again = await post_import(client, runtime, acc.account_id, body)
        expect_error(again, 409, "conflict")
        renamed = await post_import(client, runtime, acc.account_id, {**body, "name": "x"})
        expect_error(renamed, 409, "conflict")
        as_public = await post_import(
            client, runtime, acc.account_id, {**body, "keyType": "public"}
        )
        expect_error(as_public, 409, "conflict")
        # Key strings are unique across accounts too.
        elsewhere = await post_import(client, runtime, other.account_id, body)
        expect_error(elsewhere, 409, "conflict")
        leaked = imported in again.text
        assert not leaked, "the 409 body echoes the key"

        ids = await key_ids(client, acc)

        assert ids == [first.json()["id"], acc.key_id]
        ids = await key_ids(client, other)
        assert ids == [other.key_id]
        types = await event_types(client, acc)
        assert types.count("key.imported") == 1

    async def test_a_key_keyhouse_issued_cannot_be_imported_again(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        response = await post_import(
            client, runtime, other.account_id, {"key": acc.key, "name": "x", "keyType": "secret"}
        )
        expect_error(response, 409, "conflict")
        ids = await key_ids(client, other)
        assert ids == [other.key_id]

    @pytest.mark.parametrize(
        "case",
        [
            "19 characters",
            "201 characters",
            "empty",
            "space",
            "slash",
            "plus",
            "equals",
            "non-ASCII",
            "newline",
            "trailing newline",
            "null byte",
            "number",
            "null",
        ],
    )
    async def test_bad_key_string_is_400(
        self, client: httpx.AsyncClient, runtime: Runtime, case: str
    ) -> None:
        acc = await create_account(runtime)
        base = foreign_key(30)
        value: Any = {
            "19 characters": foreign_key(19),
            "201 characters": foreign_key(201),
            "empty": "",
            "space": base[:15] + " " + base[15:],
            "slash": base[:15] + "/" + base[15:],
            "plus": base[:15] + "+" + base[15:],
            "equals": base + "==",
            "non-ASCII": base[:15] + "é" + base[15:],
            "newline": base[:15] + "\n" + base[15:],
            "trailing newline": base + "\n",
            "null byte": base[:15] + "\x00" + base[15:],
            "number": 10**25,
            "null": None,
        }[case]
        response = await post_import(
            client, runtime, acc.account_id, {"key": value, "name": "n", "keyType": "secret"}
        )
        expect_error(response, 400, "validation_error")
        leaked = isinstance(value, str) and len(value) >= 8 and value in response.text
        assert not leaked, "the error body echoes the key"
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]
        types = await event_types(client, acc)
        assert "key.imported" not in types

    @pytest.mark.parametrize("key_type", ["secret", "public"])
    async def test_native_looking_key_with_a_broken_checksum_is_400(
        self, client: httpx.AsyncClient, runtime: Runtime, key_type: str
    ) -> None:
        acc = await create_account(runtime)
        native = runtime.key_format.generate("secret" if key_type == "secret" else "public")
        broken = break_checksum(native)
        kind = runtime.key_format.parse(broken).kind
        assert kind is Kind.MALFORMED
        for as_type in ("secret", "public"):
            response = await post_import(
                client, runtime, acc.account_id, {"key": broken, "name": "n", "keyType": as_type}
            )
            expect_error(response, 400, "validation_error")
            leaked = broken in response.text
            assert not leaked, "the error body echoes the key"
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]

    async def test_unknown_account_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key()
        body = {"key": imported, "name": "n", "keyType": "secret"}
        for account_id in (UNKNOWN_ACCOUNT, "acc_nope"):
            response = await post_import(client, runtime, account_id, body)
            expect_error(response, 404, "not_found")
        # Not stored anywhere: the same key imports into a real account afterwards.
        ok = await post_import(client, runtime, acc.account_id, body)
        assert ok.status_code == 201

    async def test_unknown_environment_is_404(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        theirs = await create_environment(runtime, other.account_id, "production")
        imported = foreign_key()
        for environment_id in (UNKNOWN_ENVIRONMENT, theirs.id):
            response = await post_import(
                client,
                runtime,
                acc.account_id,
                {
                    "key": imported,
                    "name": "n",
                    "keyType": "secret",
                    "environmentId": environment_id,
                },
            )
            expect_error(response, 404, "not_found")
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]
        types = await event_types(client, acc)
        assert "key.imported" not in types

    @pytest.mark.parametrize(
        "case",
        [
            "no name",
            "empty name",
            "no keyType",
            "keyType admin",
            "revoked member",
            "expiresAt member",
            "accountId member",
            "environmentId too long",
            "no key",
        ],
    )
    async def test_bad_body_is_400(
        self, client: httpx.AsyncClient, runtime: Runtime, case: str
    ) -> None:
        acc = await create_account(runtime)
        good: dict[str, Any] = {"key": foreign_key(), "name": "n", "keyType": "secret"}
        changes: dict[str, dict[str, Any]] = {
            "no name": {"name": None},
            "empty name": {"name": ""},
            "no keyType": {"keyType": None},
            "keyType admin": {"keyType": "admin"},
            "revoked member": {"revoked": True},
            "expiresAt member": {"expiresAt": "2099-01-01T00:00:00Z"},
            "accountId member": {"accountId": acc.account_id},
            "environmentId too long": {"environmentId": "e" * 65},
            "no key": {"key": None},
        }
        change = changes[case]
        body = {**good, **change}
        if case.startswith("no "):
            body = {k: v for k, v in body.items() if v is not None}
        response = await post_import(client, runtime, acc.account_id, body)
        expect_error(response, 400, "validation_error")
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]

    async def test_needs_an_admin_token(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        url = f"/admin/accounts/{acc.account_id}/keys/import"
        body = {"key": foreign_key(), "name": "n", "keyType": "secret"}
        expect_error(await client.post(url, json=body), 401, "missing_api_key")
        expect_error(
            await client.post(url, json=body, headers=acc.auth), 403, "insufficient_permissions"
        )
        expect_error(
            await client.post(url, json=body, headers=bearer("kh_admin_" + "x" * 40)),
            401,
            "invalid_api_key",
        )
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]


class TestImportRecords:
    async def test_key_imported_event_with_admin_actor(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        staging = await create_environment(runtime, acc.account_id, "staging")
        wide = foreign_key()
        scoped = foreign_key()
        first = await post_import(
            client, runtime, acc.account_id, {"key": wide, "name": "a", "keyType": "secret"}
        )
        second = await post_import(
            client,
            runtime,
            acc.account_id,
            {"key": scoped, "name": "b", "keyType": "public", "environmentId": staging.id},
        )
        assert first.status_code == 201
        assert second.status_code == 201

        response = await client.get("/events", headers=acc.auth)
        assert response.status_code == 200
        events = response.json()["events"]
        imports = [e for e in events if e["type"] == "key.imported"]
        assert [e["keyId"] for e in imports] == [second.json()["id"], first.json()["id"]]
        for event in imports:
            assert event["actor"] == {"type": "admin"}
            assert TIMESTAMP.match(event["createdAt"])
            assert None not in event.values()
        assert imports[0]["environmentId"] == staging.id
        assert "environmentId" not in imports[1]
        assert events[0]["id"] == imports[0]["id"]
        leaked = wide in response.text or scoped in response.text
        assert not leaked, "an event holds an imported key"

    async def test_imported_key_is_not_stored_in_plaintext(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        imported = foreign_key(64)
        response = await post_import(
            client, runtime, acc.account_id, {"key": imported, "name": "n", "keyType": "secret"}
        )
        assert response.status_code == 201
        # While the app runs, the new rows may still sit in the WAL: both files are read.
        found = stored_in_plaintext(runtime.settings.data_dir, imported)
        assert found == [], "the imported key is stored in plaintext"
        # And it is still recoverable (encrypted), so the check above is not vacuous.
        listed = await client.get("/keys", headers=acc.auth)
        expect_same_key(listed.json()["keys"][0]["key"], imported)


class TestImportKeyType:
    """A key with one of keyhouse's type prefixes is imported as that type, or not at all."""

    async def expect_refused(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        acc: AccountWithKey,
        key: str,
        as_type: str,
    ) -> None:
        __tracebackhide__ = True
        response = await post_import(
            client, runtime, acc.account_id, {"key": key, "name": "n", "keyType": as_type}
        )
        error = expect_error(response, 400, "validation_error")["error"]
        right = "public" if as_type == "secret" else "secret"
        assert f'"keyType": "{right}"' in error["fix"]
        leaked = key in response.text
        assert not leaked, "the error body echoes the key"

    @pytest.mark.parametrize("key_type", ["secret", "public"])
    async def test_a_native_key_of_the_other_type_is_400_and_stores_nothing(
        self, client: httpx.AsyncClient, runtime: Runtime, key_type: str
    ) -> None:
        acc = await create_account(runtime)
        native = runtime.key_format.generate("secret" if key_type == "secret" else "public")
        other = "public" if key_type == "secret" else "secret"
        await self.expect_refused(client, runtime, acc, native, other)
        ids = await key_ids(client, acc)
        assert ids == [acc.key_id]
        types = await event_types(client, acc)
        assert "key.imported" not in types
        # Nothing half-written: the key is not known to /verify...
        verdict = await client.post("/verify", headers=admin(runtime), json={"key": native})
        assert verdict.json()["code"] == "not_found"
        # ...and imports as its own type.
        ok = await post_import(
            client, runtime, acc.account_id, {"key": native, "name": "n", "keyType": key_type}
        )
        assert ok.status_code == 201
        assert ok.json()["keyType"] == key_type

    async def test_a_public_key_imported_as_public_cannot_manage_the_account(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        native = runtime.key_format.generate("public")
        ok = await post_import(
            client, runtime, acc.account_id, {"key": native, "name": "web", "keyType": "public"}
        )
        assert ok.status_code == 201
        expect_error(
            await client.get("/keys", headers=bearer(native)), 403, "insufficient_permissions"
        )

    @pytest.mark.parametrize(("prefix", "wrong"), [("sk_live_", "public"), ("pk_live_", "secret")])
    async def test_a_foreign_format_with_our_prefix_follows_the_prefix(
        self, client: httpx.AsyncClient, runtime: Runtime, prefix: str, wrong: str
    ) -> None:
        # Not our format (the length differs), but people and scanners go by the prefix.
        acc = await create_account(runtime)
        key = prefix + foreign_key(40)[4:]
        assert runtime.key_format.parse(key).kind is Kind.FOREIGN
        await self.expect_refused(client, runtime, acc, key, wrong)
        right = "secret" if wrong == "public" else "public"
        ok = await post_import(
            client, runtime, acc.account_id, {"key": key, "name": "n", "keyType": right}
        )
        assert ok.status_code == 201

    @pytest.mark.parametrize("key_type", ["secret", "public"])
    async def test_keys_without_our_prefixes_import_as_either_type(
        self, client: httpx.AsyncClient, runtime: Runtime, key_type: str
    ) -> None:
        acc = await create_account(runtime)
        for key in (foreign_key(), "SK_" + foreign_key()[4:], "xpk_" + foreign_key()[4:]):
            ok = await post_import(
                client, runtime, acc.account_id, {"key": key, "name": "n", "keyType": key_type}
            )
            assert ok.status_code == 201
            assert ok.json()["keyType"] == key_type

    async def test_configured_prefixes_are_the_ones_that_count(
        self, make_settings: Callable[..., Settings]
    ) -> None:
        settings = make_settings(key_prefix_secret="acme_sk_", key_prefix_public="acme_pk_")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                acc = await create_account(runtime)
                await self.expect_refused(
                    client, runtime, acc, runtime.key_format.generate("public"), "secret"
                )
                # sk_ is not a prefix of this deployment: an ordinary foreign key.
                ok = await post_import(
                    client,
                    runtime,
                    acc.account_id,
                    {"key": "sk_" + foreign_key()[4:], "name": "n", "keyType": "public"},
                )
                assert ok.status_code == 201
