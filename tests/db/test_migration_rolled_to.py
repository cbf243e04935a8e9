"""Migration ada63b33b29f: ``api_keys.rolled_to``, filled from the ``key.rolled`` events.

Keys rolled before the column existed must be refused a second roll too, so
the upgrade copies each rolled key's latest ``rolledTo`` from the audit log.
Run on a database of its own per engine, from the revision before.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.migrate import migrate
from tests.conftest import PG_SERVER, _pg_execute

BEFORE = "8a3cf22afdfb"
NOW = datetime(2026, 11, 30, 12, 0, 0)


@pytest.fixture
async def fresh_settings(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Settings]:
    """An empty database of this test's own (the shared PostgreSQL one is at head)."""
    if backend == "sqlite":
        yield Settings(data_dir=tmp_path / "data")
        return
    request.getfixturevalue("pg_url")  # skips or fails as the suite does without PostgreSQL
    name = f"keyhouse_mig_{secrets.token_hex(4)}"
    await _pg_execute(PG_SERVER, f'CREATE DATABASE "{name}"')
    url = PG_SERVER.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield Settings(
            data_dir=tmp_path / "data",
            database_url=url.replace("postgresql://", "postgresql+asyncpg://", 1),
        )
    finally:
        await _pg_execute(PG_SERVER, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_upgrade_fills_rolled_to_from_the_audit_log(fresh_settings: Settings) -> None:
    (fresh_settings.data_dir).mkdir(mode=0o700, exist_ok=True)
    await migrate(fresh_settings, BEFORE)
    db = Database(fresh_settings)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO accounts (id, name, created_at) VALUES ('acc_1', 'A', :now)"),
                {"now": NOW},
            )
            for key_id in ("key_old", "key_twice", "key_new1", "key_new2", "key_plain"):
                await conn.execute(
                    text(
                        "INSERT INTO api_keys (id, account_id, key_type, name, key_hash, "
                        "key_ciphertext, enc_kid, key_hint, revoked, created_at, imported) "
                        "VALUES (:id, 'acc_1', 'secret', 'n', :hash, :ct, 'k', 'sk_…x', "
                        ":false, :now, :false)"
                    ),
                    {
                        "id": key_id,
                        "hash": secrets.token_bytes(32),
                        "ct": b"x",
                        "false": False,
                        "now": NOW,
                    },
                )
            rolls = [
                ("evt_1", "key_old", {"rolledTo": "key_new1", "expiresAt": "x"}),
                ("evt_2", "key_twice", {"rolledTo": "key_new1", "expiresAt": "x"}),
                ("evt_3", "key_twice", {"rolledTo": "key_new2", "expiresAt": "x"}),
                ("evt_4", "key_plain", None),  # not a roll: another type below
            ]
            for event_id, key_id, data in rolls:
                await conn.execute(
                    text(
                        "INSERT INTO events (id, account_id, type, key_id, actor_type, data, "
                        "created_at) VALUES (:id, 'acc_1', :type, :key_id, 'cli', :data, :now)"
                    ),
                    {
                        "id": event_id,
                        "type": "key.rolled" if data else "key.revoked",
                        "key_id": key_id,
                        "data": json.dumps(data) if data else None,
                        "now": NOW,
                    },
                )
    finally:
        await db.dispose()

    await migrate(fresh_settings)

    db = Database(fresh_settings)
    try:
        async with db.engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, rolled_to FROM api_keys ORDER BY id"))
            rolled_to: dict[str, str | None] = {row[0]: row[1] for row in rows}
    finally:
        await db.dispose()
    assert rolled_to == {
        "key_new1": None,
        "key_new2": None,
        "key_old": "key_new1",
        "key_plain": None,
        "key_twice": "key_new2",  # the latest roll
    }
