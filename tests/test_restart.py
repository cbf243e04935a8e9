"""Keys survive a restart; encryption keys rotate; nothing is stored in plaintext.

The zero-config start generates an encryption key into the data directory
(README, "Keys") because ``KEYHOUSE_ENCRYPTION_KEYS`` is unset in the tests.
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.keys.crypto import ENCRYPTION_KEYS_FILE
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.factories import AccountWithKey, bearer, create_account, expect_same_key

SettingsFactory = Callable[..., Settings]


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[httpx.AsyncClient, Runtime]]:
    """A fresh app on ``settings``, started and (on exit) shut down."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c, app.state.runtime


async def post_key(client: httpx.AsyncClient, account: AccountWithKey, **body: Any) -> Any:
    response = await client.post("/keys", json=body, headers=account.auth)
    status = response.status_code
    assert status == 201, response.json().get("error")
    return response.json()


async def get_keys(client: httpx.AsyncClient, account: AccountWithKey) -> list[dict[str, Any]]:
    response = await client.get("/keys", headers=bearer(account.key))
    status = response.status_code
    assert status == 200, response.json().get("error")
    keys: list[dict[str, Any]] = response.json()["keys"]
    return keys


def expect_same_listing(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same keys, members and key strings, compared without showing a key."""
    actual_ids = [k["id"] for k in actual]
    expected_ids = [k["id"] for k in expected]
    assert actual_ids == expected_ids
    for got, want in zip(actual, expected, strict=True):
        expect_same_key(got["key"], want["key"])
        # Listing uses the caller's key, so its lastUsedAt moves on (never back).
        skip = {"key", "lastUsedAt"}
        got_rest = {k: v for k, v in got.items() if k not in skip}
        want_rest = {k: v for k, v in want.items() if k not in skip}
        assert got_rest == want_rest
        if "lastUsedAt" in want:
            assert got["lastUsedAt"] >= want["lastUsedAt"]


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def enc_kids(runtime: Runtime) -> dict[str, str]:
    async with runtime.db.session(write=False) as session:
        rows = (await session.execute(select(ApiKey.id, ApiKey.enc_kid))).all()
    return {key_id: kid for key_id, kid in rows}


async def test_keys_survive_a_restart(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    keys_file = settings.data_dir / ENCRYPTION_KEYS_FILE
    assert not keys_file.exists()
    # PostgreSQL: the encryption key is given (KEYHOUSE_ENCRYPTION_KEYS), never generated.
    generated = settings.generates_secrets

    async with running(settings) as (client, runtime):
        account = await create_account(runtime)
        env = await client.post("/environments", json={"name": "prod"}, headers=account.auth)
        env_status = env.status_code
        assert env_status == 201
        created = [
            await post_key(client, account, name="server", keyType="secret"),
            await post_key(client, account, name="browser", keyType="public"),
            await post_key(
                client, account, name="prod", keyType="secret", environmentId=env.json()["id"]
            ),
        ]
        before = await get_keys(client, account)

    assert keys_file.exists() == generated
    if generated:
        file_hash = sha256_of(keys_file)
        file_stat = keys_file.stat()

    async with running(settings) as (client, _):
        after = await get_keys(client, account)

    expect_same_listing(after, before)
    by_id = {k["id"]: k for k in after}
    for key in created:
        expect_same_key(by_id[key["id"]]["key"], key["key"])
    expect_same_key(by_id[account.key_id]["key"], account.key)
    if not generated:
        assert not keys_file.exists()
        return
    # The generated encryption key is read again, not rewritten.
    assert sha256_of(keys_file) == file_hash
    assert keys_file.stat().st_ino == file_stat.st_ino
    assert keys_file.stat().st_mtime_ns == file_stat.st_mtime_ns


async def test_a_new_encryption_key_leaves_old_keys_readable(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    async with running(settings) as (client, runtime):
        account = await create_account(runtime)
        old_key = await post_key(client, account, name="old", keyType="secret")
        before = await get_keys(client, account)

    keys_file = settings.data_dir / ENCRYPTION_KEYS_FILE
    if settings.encryption_keys is None:  # generated into the data dir (SQLite)
        file_hash = sha256_of(keys_file)
        old_entry = keys_file.read_text(encoding="utf-8").strip()  # "kid:base64", one line
    else:  # given, as it must be with KEYHOUSE_DATABASE_URL (PostgreSQL)
        old_entry = settings.encryption_keys.get_secret_value()
    old_kid = old_entry.partition(":")[0]
    new_b64 = base64.b64encode(os.urandom(32)).decode("ascii")
    rotated = make_settings(encryption_keys=f"new:{new_b64},{old_entry}")

    async with running(rotated) as (client, runtime):
        listed = await get_keys(client, account)
        expect_same_listing(listed, before)
        new_key = await post_key(client, account, name="new", keyType="public")
        after = await get_keys(client, account)
        kids = await enc_kids(runtime)

    assert [k["id"] for k in after] == [new_key["id"], *(k["id"] for k in before)]
    expect_same_key(after[0]["key"], new_key["key"])
    expect_same_listing(after[1:], before)
    assert kids[new_key["id"]] == "new"
    assert kids[old_key["id"]] == old_kid
    assert kids[account.key_id] == old_kid
    if settings.encryption_keys is None:
        # The setting is used as given: the generated file is left alone.
        assert sha256_of(keys_file) == file_hash
    else:
        assert not keys_file.exists()


async def test_no_key_is_stored_in_plaintext(make_settings: SettingsFactory) -> None:
    settings = make_settings()
    issued: list[str] = []
    async with running(settings) as (client, runtime):
        account = await create_account(runtime)
        issued.append(account.key)
        for key_type in ("secret", "public"):
            created = await post_key(client, account, name=key_type, keyType=key_type)
            issued.append(created["key"])
        # While running: the rows may still sit in the WAL.
        leaks_running = _leaks(settings.data_dir, issued)
    leaks_stopped = _leaks(settings.data_dir, issued)

    assert leaks_running == []
    assert leaks_stopped == []


def _leaks(data_dir: Path, keys: list[str]) -> list[str]:
    """Which database files hold a key (or a key's random body) in plaintext."""
    found = []
    for name in ("keyhouse.db", "keyhouse.db-wal"):
        path = data_dir / name
        if not path.exists():
            continue
        content = path.read_bytes()
        for index, key in enumerate(keys):
            body = key[3:]  # without the sk_/pk_ prefix
            for needle in (key, body):
                for encoded in (needle.encode("ascii"), needle.encode("utf-16-le")):
                    if encoded in content:
                        found.append(f"{name}: key #{index}")
    return found
