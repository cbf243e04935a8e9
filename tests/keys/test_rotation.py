"""``keyhouse key reencrypt``: every key moved under the newest encryption key.

Keys are written for real under an old encryption key (``old``), one the
server no longer has (``lost``), and the newest (``new``); the run moves the
old ones, reports the lost ones without touching them, commits batch by
batch, and survives being killed part-way (a subprocess, killed while a
batch waits for a lock the test holds, then run again).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from sqlalchemy import select, update

from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.keys.crypto import Keyring, hash_key
from keyhouse.keys.rotation import Report, reencrypt_all
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.conftest import pg_plain
from tests.factories import AccountWithKey, create_account, expect_same_key, settings_env
from tests.keys.test_unrecoverable import encrypting_with
from tests.limits.conftest import served

NEW = ("new", os.urandom(32))
OLD = ("old", os.urandom(32))
LOST = ("lost", os.urandom(32))


def spec(*keys: tuple[str, bytes]) -> str:
    return ",".join(f"{kid}:{base64.b64encode(raw).decode()}" for kid, raw in keys)


async def make_keys(runtime: Runtime, account_id: str, count: int) -> list[IssuedKey]:
    async with runtime.db.session(write=True) as session:
        service = KeyService(session, runtime)
        return [
            await service.create(
                account_id, name=f"k{i}", key_type="secret", actor=CLI, check_limit=False
            )
            for i in range(count)
        ]


async def stored(runtime: Runtime) -> dict[str, ApiKey]:
    async with runtime.db.session(write=False) as session:
        rows = (await session.scalars(select(ApiKey))).all()
        return {row.id: row for row in rows}


def readable_under(keyring: Keyring, row: ApiKey) -> str | None:
    """The key of ``row`` if ``keyring`` decrypts it to the key its hash is of."""
    plain = keyring.decrypt_each([(row.enc_kid, row.key_ciphertext, row.id)])[0]
    return plain if plain is not None and hash_key(plain) == row.key_hash else None


@asynccontextmanager
async def rotated(runtime: Runtime) -> AsyncIterator[None]:
    """The server configured as after a rotation: ``new`` first, ``old`` kept, ``lost`` gone."""
    async with encrypting_with(runtime, Keyring([NEW, OLD])):
        yield


class TestReencrypt:
    async def test_moves_old_keys_and_reports_unreadable_ones(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        async with encrypting_with(runtime, Keyring([OLD])):
            old = await make_keys(runtime, acc.account_id, 5)
        async with encrypting_with(runtime, Keyring([LOST])):
            lost = await make_keys(runtime, acc.account_id, 2)
        async with rotated(runtime):
            current = await make_keys(runtime, acc.account_id, 2)
            before = await stored(runtime)
            report = await reencrypt_all(runtime, batch_size=2)
        assert report.enc_kid == "new"
        # The account's first key was under the server's generated key: not listed, lost too.
        unreadable = {u.key_id: u for u in report.unreadable}
        assert set(unreadable) == {acc.key_id, *(k.row.id for k in lost)}
        assert {u.reason for u in report.unreadable} == {"encryption_key_not_configured"}
        assert unreadable[lost[0].row.id].enc_kid == "lost"
        assert unreadable[lost[0].row.id].account_id == acc.account_id
        assert report.moved == len(old)
        after = await stored(runtime)
        only_new = Keyring([NEW])
        for issued in [*old, *current]:
            row = after[issued.row.id]
            assert row.enc_kid == "new"
            expect_same_key(readable_under(only_new, row), issued.plaintext)
        for issued in lost:  # left exactly as they were
            assert after[issued.row.id].key_ciphertext == before[issued.row.id].key_ciphertext
            assert after[issued.row.id].enc_kid == "lost"
        # Current keys were not rewritten.
        for issued in current:
            assert after[issued.row.id].key_ciphertext == before[issued.row.id].key_ciphertext

    async def test_a_second_run_moves_nothing(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        async with encrypting_with(runtime, Keyring([OLD])):
            await make_keys(runtime, acc.account_id, 3)
        async with rotated(runtime):
            first = await reencrypt_all(runtime, batch_size=2)
            middle = await stored(runtime)
            second = await reencrypt_all(runtime, batch_size=2)
        assert first.moved == 3
        assert second.moved == 0
        after = await stored(runtime)
        for key_id, row in middle.items():
            assert after[key_id].key_ciphertext == row.key_ciphertext

    async def test_damaged_or_foreign_ciphertexts_are_reported_and_left(
        self, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        async with encrypting_with(runtime, Keyring([OLD])):
            damaged, swapped = await make_keys(runtime, acc.account_id, 2)
        old_ring = Keyring([OLD])
        # A ciphertext that decrypts, with the right associated data, to another key:
        # its hash is not the row's, so it is not this key and must not be re-sealed.
        other = old_ring.encrypt("sk_not_this_key_000000000000", associated=swapped.row.id)
        async with runtime.db.session(write=True) as session:
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == damaged.row.id)
                .values(key_ciphertext=damaged.row.key_ciphertext[:-1] + b"\0")
            )
            await session.execute(
                update(ApiKey)
                .where(ApiKey.id == swapped.row.id)
                .values(key_ciphertext=other.ciphertext)
            )
        before = await stored(runtime)
        async with rotated(runtime):
            report = await reencrypt_all(runtime)
        reasons = {u.key_id: u.reason for u in report.unreadable}
        assert reasons[damaged.row.id] == "ciphertext_does_not_decrypt"
        assert reasons[swapped.row.id] == "hash_does_not_match"
        after = await stored(runtime)
        for key_id in (damaged.row.id, swapped.row.id):
            assert after[key_id].key_ciphertext == before[key_id].key_ciphertext
            assert after[key_id].enc_kid == "old"

    async def test_keys_list_in_full_once_the_old_encryption_key_is_gone(
        self, runtime: Runtime, client: httpx.AsyncClient
    ) -> None:
        async with encrypting_with(runtime, Keyring([OLD])):
            acc = await create_account(runtime)
            made = await make_keys(runtime, acc.account_id, 3)
        async with rotated(runtime):
            report = await reencrypt_all(runtime)
        assert report.unreadable == []
        async with encrypting_with(runtime, Keyring([NEW])):
            resp = await client.get("/keys", headers=acc.auth)
        assert resp.status_code == 200
        listed = {k["id"]: k for k in resp.json()["keys"]}
        assert not any("recoverable" in k for k in listed.values())
        for issued in made:
            expect_same_key(listed[issued.row.id]["key"], issued.plaintext)

    @pytest.mark.postgresql_only
    async def test_concurrent_revokes_and_renames_are_kept(
        self, runtime: Runtime, client: httpx.AsyncClient
    ) -> None:
        """A reencrypt writes only the ciphertext and its kid: revokes and renames that
        run at the same time (PostgreSQL, READ COMMITTED) all stay."""
        async with encrypting_with(runtime, Keyring([OLD])):
            acc = await create_account(runtime)
            made = await make_keys(runtime, acc.account_id, 40)
        async with rotated(runtime):

            async def change(i: int, issued: IssuedKey) -> None:
                if i % 2:
                    path, body = f"/keys/{issued.row.id}/revoke", None
                    resp = await client.post(path, headers=acc.auth)
                else:
                    body = {"name": f"renamed {i}"}
                    resp = await client.patch(f"/keys/{issued.row.id}", headers=acc.auth, json=body)
                assert resp.status_code == 200

            reports: list[Report] = []

            async def rotate() -> None:
                reports.append(await reencrypt_all(runtime, batch_size=3))

            async with anyio.create_task_group() as tg:
                tg.start_soon(rotate)
                for i, issued in enumerate(made):
                    tg.start_soon(change, i, issued)
        # Keys a request held were passed over, then moved at the end of the run.
        (report,) = reports
        assert (report.moved, report.unreadable, report.busy) == (len(made) + 1, [], [])
        after = await stored(runtime)
        for i, issued in enumerate(made):
            row = after[issued.row.id]
            assert row.enc_kid == "new"
            if i % 2:
                assert row.revoked
            else:
                assert row.name == f"renamed {i}"

    @pytest.mark.postgresql_only
    async def test_a_key_held_all_along_is_reported_busy(
        self, runtime: Runtime, settings: Settings
    ) -> None:
        async with encrypting_with(runtime, Keyring([OLD])):
            acc = await create_account(runtime)
            (held,) = await make_keys(runtime, acc.account_id, 1)
        other = await asyncpg.connect(pg_plain(settings.database_url))
        try:
            async with other.transaction():
                await other.execute("SELECT 1 FROM api_keys WHERE id = $1 FOR UPDATE", held.row.id)
                async with rotated(runtime):
                    report = await reencrypt_all(runtime)
            assert (report.moved, report.busy, report.complete) == (1, [held.row.id], False)
            async with rotated(runtime):
                again = await reencrypt_all(runtime)
            assert (again.moved, again.busy, again.complete) == (1, [], True)
        finally:
            await other.close()


# -- the command, killed part-way ----------------------------------------------------------


def command_env(settings: Settings, keys: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOUSE_")}
    return {**env, **settings_env(settings), "KEYHOUSE_ENCRYPTION_KEYS": keys}


def reencrypt_command(settings: Settings, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "keyhouse", "key", "reencrypt", "--json", *args],
        env=command_env(settings, spec(NEW, OLD)),
        cwd=settings.data_dir.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Database:
    """The test's own connection to the command's database: counts, and a lock to hold."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.sqlite: sqlite3.Connection | None = None
        self.pg: asyncpg.Connection | None = None

    async def open(self) -> None:
        if self.settings.is_sqlite:
            self.sqlite = sqlite3.connect(self.settings.sqlite_path, isolation_level=None)
        else:
            self.pg = await asyncpg.connect(pg_plain(self.settings.database_url))

    async def moved(self) -> int:
        query = "SELECT count(*) FROM api_keys WHERE enc_kid = 'new'"
        if self.sqlite is not None:
            return int(self.sqlite.execute(query).fetchone()[0])
        assert self.pg is not None
        return int(await self.pg.fetchval(query))

    async def lock_writes(self) -> None:
        """Hold the lock a batch needs to write: the command waits at its next batch."""
        if self.sqlite is not None:
            self.sqlite.execute("BEGIN IMMEDIATE")
        else:
            assert self.pg is not None
            await self.pg.execute("BEGIN")
            await self.pg.execute("LOCK TABLE api_keys IN EXCLUSIVE MODE")

    async def close(self) -> None:
        if self.sqlite is not None:
            if self.sqlite.in_transaction:
                self.sqlite.execute("ROLLBACK")
            self.sqlite.close()
        if self.pg is not None:
            await self.pg.close()


async def wait_until(condition: Callable[[], Any], what: str, seconds: float = 60) -> None:
    for _ in range(int(seconds / 0.005)):
        if await condition():
            return
        await anyio.sleep(0.005)
    raise AssertionError(f"{what} did not happen within {seconds} s")


async def test_reencrypt_survives_being_killed(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(encryption_keys=spec(OLD))
    runtime = Runtime.build(settings)
    try:
        acc = await create_account(runtime)
        made = await make_keys(runtime, acc.account_id, 199)
    finally:
        await runtime.close()
    total = len(made) + 1
    db = Database(settings)
    await db.open()
    proc = reencrypt_command(settings, "--batch-size", "1")
    try:
        await wait_until(lambda: _moved_some(db), "the first batch")
        await db.lock_writes()
        at_kill = await db.moved()
        assert proc.poll() is None, "the command ended before it was killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
        await db.close()
    assert 0 < at_kill < total, at_kill
    # Run again: it goes on where the killed run stopped, and finishes.
    with anyio.fail_after(120):
        again = await anyio.run_process(
            [sys.executable, "-m", "keyhouse", "key", "reencrypt", "--json"],
            env=command_env(settings, spec(NEW, OLD)),
            cwd=settings.data_dir.parent,
            check=False,
        )
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    report = json.loads(again.stdout)
    expected = {"encryptionKeyId": "new", "moved": total - at_kill, "unreadable": [], "busy": []}
    assert report == expected
    # Every key is readable under the newest encryption key alone, and still authenticates.
    check = Runtime.build(make_settings(encryption_keys=spec(NEW)))
    try:
        rows = await stored(check)
        assert len(rows) == total
        for issued in made:
            expect_same_key(readable_under(check.keyring, rows[issued.row.id]), issued.plaintext)
        assert readable_under(check.keyring, rows[acc.key_id]) is not None
    finally:
        await check.close()


async def _moved_some(db: Database) -> bool:
    return await db.moved() > 0


@pytest.mark.sqlite_only
async def test_reencrypt_lists_the_keys_it_cannot_read(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(encryption_keys=spec(OLD))
    runtime = Runtime.build(settings)
    try:
        acc = await create_account(runtime)
        async with encrypting_with(runtime, Keyring([LOST])):
            (lost,) = await make_keys(runtime, acc.account_id, 1)
    finally:
        await runtime.close()
    for args in [(), ("--json",)]:
        with anyio.fail_after(120):
            proc = await anyio.run_process(
                [sys.executable, "-m", "keyhouse", "key", "reencrypt", *args],
                env=command_env(settings, spec(NEW, OLD)),
                cwd=settings.data_dir.parent,
                check=False,
            )
        assert proc.returncode == 1, proc.stderr.decode()[-2000:]
        stdout = proc.stdout.decode()
        if args:
            report = json.loads(stdout)
            assert report["moved"] == 0  # the first run moved the account's key
            assert report["unreadable"] == [
                {
                    "keyId": lost.row.id,
                    "accountId": acc.account_id,
                    "encKid": "lost",
                    "reason": "encryption_key_not_configured",
                }
            ]
        else:
            lines = stdout.splitlines()
            assert lines[0] == "Moved 1 keys under encryption key new."
            assert lines[1] == "1 keys cannot be read and were left as they are:"
            assert lines[2] == (
                f"  {lost.row.id} (account {acc.account_id}, encryption key lost): "
                "encryption_key_not_configured"
            )


@pytest.mark.postgresql_only
async def test_reencrypt_beside_two_serving_processes(
    make_settings: Callable[..., Settings],
) -> None:
    """While the command runs, two ``keyhouse serve`` processes list, rename and revoke
    the keys it moves: every listing shows each key in full and unchanged, every
    change stays, and every key ends under the newest encryption key."""
    settings = make_settings(encryption_keys=spec(OLD))
    runtime = Runtime.build(settings)
    try:
        accounts = [await create_account(runtime, f"A{i}") for i in range(3)]
        made = {acc.account_id: await make_keys(runtime, acc.account_id, 40) for acc in accounts}
    finally:
        await runtime.close()
    plaintexts = {k.row.id: k.plaintext for keys in made.values() for k in keys}
    plaintexts.update({acc.key_id: acc.key for acc in accounts})
    names: dict[str, str] = {}
    revoked: set[str] = set()
    with served(settings, 2, KEYHOUSE_ENCRYPTION_KEYS=spec(NEW, OLD)) as urls:
        proc = reencrypt_command(settings, "--batch-size", "4")
        async with httpx.AsyncClient(timeout=30) as http:

            async def churn(acc: AccountWithKey, keys: list[IssuedKey]) -> int:
                rounds = 0
                while rounds < 2 or proc.poll() is None:
                    rounds += 1
                    for i, issued in enumerate(keys):
                        url = urls[(i + rounds) % 2]
                        key_id = issued.row.id
                        if i % 5 == rounds % 5 and key_id not in revoked:
                            answer = await http.post(
                                f"{url}/keys/{key_id}/revoke", headers=acc.auth
                            )
                            revoked.add(key_id)
                        else:
                            name = f"r{rounds} k{i}"
                            answer = await http.patch(
                                f"{url}/keys/{key_id}", headers=acc.auth, json={"name": name}
                            )
                            names[key_id] = name
                        assert answer.status_code == 200, answer.status_code
                    listing = await http.get(f"{urls[rounds % 2]}/keys", headers=acc.auth)
                    assert listing.status_code == 200, listing.status_code
                    for obj in listing.json()["keys"]:
                        assert "recoverable" not in obj, obj["id"]
                        expect_same_key(obj["key"], plaintexts[obj["id"]])
                return rounds

            rounds = await asyncio.gather(*(churn(acc, made[acc.account_id]) for acc in accounts))
        out, err = await anyio.to_thread.run_sync(lambda: proc.communicate(timeout=120))
    assert proc.returncode == 0, err[-2000:]
    report = json.loads(out)
    assert report == {
        "encryptionKeyId": "new",
        "moved": len(plaintexts),
        "unreadable": [],
        "busy": [],
    }
    assert min(rounds) >= 2
    check = Runtime.build(make_settings(encryption_keys=spec(NEW)))
    try:
        rows = await stored(check)
    finally:
        await check.close()
    for key_id, plaintext in plaintexts.items():
        row = rows[key_id]
        expect_same_key(readable_under(check.keyring, row), plaintext)
        assert row.revoked is (key_id in revoked), key_id
        if key_id in names:
            assert row.name == names[key_id], key_id
