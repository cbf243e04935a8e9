"""A key whose stored ciphertext cannot be decrypted never blocks anything (issue 13).

The key is written for real under an encryption key the server does not
have (``lost``), or its ciphertext is damaged. Listing and showing it answer
it masked with ``"recoverable": false`` and a warning naming the key id and
the encryption key id; revoking, rolling, renaming and verifying (by hash)
work as for any key. Every other key object stays exactly the seed's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from keyhouse.app import create_app
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys.crypto import Keyring
from keyhouse.keys.format import KeyType
from keyhouse.keys.presenter import MAX_UNRECOVERABLE_WARNINGS, key_object
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.factories import (
    bearer,
    create_account,
    create_key,
    expect_error,
    expect_same_key,
)
from tests.keys.test_endpoints import check_contract

LOST_KID = "lost"


def lost_keyring() -> Keyring:
    return Keyring([(LOST_KID, os.urandom(32))])


@asynccontextmanager
async def encrypting_with(runtime: Runtime, keyring: Keyring) -> AsyncIterator[None]:
    """Keys made in the block are encrypted under ``keyring``, as another keyhouse would."""
    kept = runtime.keyring
    runtime.keyring = keyring
    try:
        yield
    finally:
        runtime.keyring = kept


async def lost_key(
    runtime: Runtime, account_id: str, *, key_type: KeyType = "secret", name: str = "lost"
) -> IssuedKey:
    """A key written under an encryption key id this server does not know."""
    async with encrypting_with(runtime, lost_keyring()):
        return await create_key(runtime, account_id, key_type=key_type, name=name)


async def damage(runtime: Runtime, key_id: str) -> None:
    """Flip a byte of the key's stored ciphertext (its encryption key is known)."""
    async with runtime.db.session(write=True) as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        spoilt = bytearray(row.key_ciphertext)
        spoilt[-1] ^= 0x01
        await session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(key_ciphertext=bytes(spoilt))
        )


def hint(runtime: Runtime, issued: IssuedKey) -> str:
    key_type: KeyType = "secret" if issued.row.key_type == "secret" else "public"
    return runtime.key_format.mask(issued.plaintext, key_type)


def expect_masked(obj: dict[str, Any], runtime: Runtime, issued: IssuedKey) -> None:
    __tracebackhide__ = True
    assert obj["id"] == issued.row.id
    assert obj["recoverable"] is False
    shown = obj["key"]
    is_masked = "…" in shown and len(shown) < 20
    assert is_masked, "the key is not masked"
    expect_same_key(shown, hint(runtime, issued))


def warnings_about(err: str, key_id: str) -> list[dict[str, Any]]:
    """The log's key_not_recoverable lines about ``key_id``."""
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    return [x for x in lines if x.get("event") == "key_not_recoverable" and x["key_id"] == key_id]


class TestListAndShow:
    async def test_listed_masked_and_the_rest_as_the_seed(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        public = await lost_key(runtime, acc.account_id, key_type="public", name="lost public")
        resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        body = resp.json()
        check_contract(body)
        by_id = {k["id"]: k for k in body["keys"]}
        expect_masked(by_id[lost.row.id], runtime, lost)
        expect_masked(by_id[public.row.id], runtime, public)
        # The readable key: full, and no `recoverable` member at all.
        normal = by_id[acc.key_id]
        assert "recoverable" not in normal
        expect_same_key(normal["key"], acc.key)
        err = capfd.readouterr().err
        leaked = acc.key in err or lost.plaintext in err
        assert not leaked, "a key in the log"
        (warning,) = warnings_about(err, lost.row.id)
        assert warning["level"] == "warning"
        assert warning["event"] == "key_not_recoverable"
        assert warning["key_id"] == lost.row.id
        assert warning["enc_kid"] == LOST_KID
        assert warning["reason"] == "encryption_key_not_configured"

    async def test_shown_masked(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        resp = await client.get(f"/keys/{lost.row.id}", headers=acc.auth)
        assert resp.status_code == 200
        expect_masked(resp.json(), runtime, lost)
        (warning,) = warnings_about(capfd.readouterr().err, lost.row.id)
        assert warning["enc_kid"] == LOST_KID

    async def test_damaged_ciphertext_is_masked_too(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        acc = await create_account(runtime)
        issued = await create_key(runtime, acc.account_id, name="damaged")
        await damage(runtime, issued.row.id)
        resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        by_id = {k["id"]: k for k in resp.json()["keys"]}
        expect_masked(by_id[issued.row.id], runtime, issued)
        (warning,) = warnings_about(capfd.readouterr().err, issued.row.id)
        assert warning["enc_kid"] == runtime.keyring.current_kid
        assert warning["reason"] == "ciphertext_does_not_decrypt"

    async def test_masked_listing_setting_marks_only_what_it_tried(
        self, make_settings: Callable[..., Settings]
    ) -> None:
        """With KEYHOUSE_LIST_REVEALS_KEYS=false secret keys are not decrypted at all:
        only a public key (shown in full) can turn out unrecoverable."""
        app = create_app(make_settings(list_reveals_keys=False))
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            acc = await create_account(runtime)
            secret = await lost_key(runtime, acc.account_id)
            public = await lost_key(runtime, acc.account_id, key_type="public")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        by_id = {k["id"]: k for k in resp.json()["keys"]}
        assert "recoverable" not in by_id[secret.row.id]
        expect_same_key(by_id[secret.row.id]["key"], hint(runtime, secret))
        expect_masked(by_id[public.row.id], runtime, public)

    async def test_many_unrecoverable_keys_make_bounded_warnings(
        self,
        client: httpx.AsyncClient,
        runtime: Runtime,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        acc = await create_account(runtime)
        count = MAX_UNRECOVERABLE_WARNINGS + 5
        async with (
            runtime.db.session(write=True) as session,
            encrypting_with(runtime, lost_keyring()),
        ):
            service = KeyService(session, runtime)
            for i in range(count):
                await service.create(
                    acc.account_id,
                    name=f"k{i}",
                    key_type="secret",
                    actor=CLI,
                    check_limit=False,
                )
        capfd.readouterr()
        resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        assert sum(1 for k in resp.json()["keys"] if k.get("recoverable") is False) == count
        lines = [json.loads(x) for x in capfd.readouterr().err.splitlines() if x.startswith("{")]
        each = [x for x in lines if x.get("event") == "key_not_recoverable"]
        summary = [x for x in lines if x.get("event") == "keys_not_recoverable"]
        assert len(each) == MAX_UNRECOVERABLE_WARNINGS
        assert [(x["count"], x["not_listed"]) for x in summary] == [(count, 5)]


class TestNothingElseNeedsThePlaintext:
    async def test_revoked_then_refused_by_verify(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        admin = bearer(runtime.admin_tokens.first)
        before = await client.post("/verify", headers=admin, json={"key": lost.plaintext})
        assert before.json()["code"] == "valid"  # verification compares hashes
        resp = await client.post(f"/keys/{lost.row.id}/revoke", headers=acc.auth)
        assert resp.status_code == 200
        expect_masked(resp.json(), runtime, lost)
        assert resp.json()["revoked"] is True
        after = await client.post("/verify", headers=admin, json={"key": lost.plaintext})
        assert after.status_code == 200
        assert after.json()["valid"] is False
        assert after.json()["code"] == "revoked"
        # And the key itself is refused on the account API.
        expect_error(
            await client.get("/keys", headers=bearer(lost.plaintext)), 401, "revoked_api_key"
        )

    async def test_the_last_secret_key_revoked_with_force(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        """Issue 13: an account whose only secret key was unreadable could not revoke it."""
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        revoke = await client.post(f"/keys/{acc.key_id}/revoke", headers=acc.auth)
        assert revoke.status_code == 200
        # Its last secret key now: the refusal and the forced revoke both answer.
        expect_error(
            await client.post(f"/keys/{lost.row.id}/revoke", headers=bearer(lost.plaintext)),
            409,
            "last_secret_key",
        )
        forced = await client.post(
            f"/keys/{lost.row.id}/revoke?force=true", headers=bearer(lost.plaintext)
        )
        assert forced.status_code == 200
        expect_masked(forced.json(), runtime, lost)

    async def test_revoked_by_the_cli_service(self, runtime: Runtime) -> None:
        """What ``keyhouse key revoke --force`` runs: the service, then the key object."""
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            row = await KeyService(session, runtime).revoke(
                None, lost.row.id, force=True, actor=CLI
            )
            obj = key_object(runtime, row, viewer=None)
        expect_masked(obj, runtime, lost)
        assert obj["revoked"] is True

    async def test_rolled_into_a_readable_key(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        resp = await client.post(
            f"/keys/{lost.row.id}/roll", headers=acc.auth, json={"expiresInSeconds": 0}
        )
        assert resp.status_code == 201
        new = resp.json()
        assert "recoverable" not in new
        admin = bearer(runtime.admin_tokens.first)
        verdict = await client.post("/verify", headers=admin, json={"key": new["key"]})
        assert verdict.json()["code"] == "valid"
        old = await client.post("/verify", headers=admin, json={"key": lost.plaintext})
        assert old.json()["code"] == "expired"
        listed = {k["id"]: k for k in (await client.get("/keys", headers=acc.auth)).json()["keys"]}
        expect_masked(listed[lost.row.id], runtime, lost)
        assert "recoverable" not in listed[new["id"]]
        expect_same_key(listed[new["id"]]["key"], new["key"])

    async def test_renamed(self, client: httpx.AsyncClient, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        resp = await client.patch(f"/keys/{lost.row.id}", headers=acc.auth, json={"name": "new"})
        assert resp.status_code == 200
        assert resp.json()["name"] == "new"
        expect_masked(resp.json(), runtime, lost)

    async def test_authenticates_as_itself(
        self, client: httpx.AsyncClient, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        lost = await lost_key(runtime, acc.account_id)
        resp = await client.get(f"/keys/{lost.row.id}", headers=bearer(lost.plaintext))
        assert resp.status_code == 200
        expect_masked(resp.json(), runtime, lost)
