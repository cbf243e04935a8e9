"""Migration b7c3d2e1f0a9 (issue 15): key scopes and restrictions, the scope
catalog, the account's browser guard; existing rows survive both ways.

The upgrade adds a column to ``accounts``. On SQLite batch mode's
copy-and-move of that table (DROP TABLE with foreign_keys=ON) deleted every
key, environment and event of every account: this test is what caught it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from alembic import command
from sqlalchemy import text

from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.migrate import alembic_config, migrate
from tests.db.test_migration_rolled_to import fresh_settings

__all__ = ["fresh_settings"]  # the fixture, shared

BEFORE = "5c1e0b7d9a41"
NOW = datetime(2026, 12, 1, 12, 0, 0)
TABLES = ("accounts", "environments", "api_keys", "events", "usage")


async def _counts(settings: Settings) -> dict[str, int]:
    db = Database(settings)
    try:
        async with db.engine.connect() as conn:
            return {
                table: (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()  # noqa: S608 (constant names)
                for table in TABLES
            }
    finally:
        await db.dispose()


async def _downgrade(settings: Settings, revision: str) -> None:
    db = Database(settings)
    try:
        cfg = alembic_config(settings.sqlalchemy_url)

        def _run(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.downgrade(cfg, revision)

        async with db.connect() as conn:
            await conn.run_sync(_run)
    finally:
        await db.dispose()


async def test_upgrade_and_downgrade_keep_every_row(fresh_settings: Settings) -> None:
    fresh_settings.data_dir.mkdir(mode=0o700, exist_ok=True)
    await migrate(fresh_settings, BEFORE)
    db = Database(fresh_settings)
    try:
        async with db.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO accounts (id, name, created_at) VALUES ('acc_1', 'A', :now)"),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO environments (id, account_id, name, created_at) "
                    "VALUES ('env_1', 'acc_1', 'live', :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO api_keys (id, account_id, environment_id, key_type, name, "
                    "key_hash, key_ciphertext, enc_kid, key_hint, revoked, created_at, imported) "
                    "VALUES ('key_1', 'acc_1', 'env_1', 'secret', 'n', :hash, :ct, 'k', "
                    "'sk_…x', :false, :now, :false)"
                ),
                {"hash": b"h" * 32, "ct": b"x", "false": False, "now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO events (id, account_id, type, actor_type, created_at) "
                    "VALUES ('evt_1', 'acc_1', 'key.created', 'cli', :now)"
                ),
                {"now": NOW},
            )
            await conn.execute(
                text(
                    "INSERT INTO usage (account_id, period, requests) "
                    "VALUES ('acc_1', '2026-12', 5)"
                )
            )
    finally:
        await db.dispose()
    before = await _counts(fresh_settings)
    assert before == dict.fromkeys(TABLES, 1)

    await migrate(fresh_settings)
    assert await _counts(fresh_settings) == before
    db = Database(fresh_settings)
    try:
        async with db.engine.connect() as conn:
            key = (await conn.execute(text("SELECT scopes, restrictions FROM api_keys"))).one()
            guard = (
                await conn.execute(text("SELECT refuse_secret_keys_from_browsers FROM accounts"))
            ).scalar_one()
            catalog = (await conn.execute(text("SELECT count(*) FROM catalog_entries"))).scalar()
    finally:
        await db.dispose()
    assert tuple(key) == (None, None)  # existing keys stay unrestricted
    assert not guard
    assert catalog == 0

    await _downgrade(fresh_settings, BEFORE)
    assert await _counts(fresh_settings) == before
