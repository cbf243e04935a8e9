"""Alembic migrations and the SQLite connection settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, select, text

import keyhouse.models  # noqa: F401  (registers the tables on Base.metadata)
from keyhouse.config import Settings
from keyhouse.db.base import Base
from keyhouse.db.engine import Database
from keyhouse.db.migrate import alembic_config, migrate
from keyhouse.models import Account
from keyhouse.runtime import Runtime
from tests.factories import create_account


def _diff(sync_conn: Connection) -> list[Any]:
    context = MigrationContext.configure(sync_conn, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


def _schema(sync_conn: Connection) -> list[tuple[Any, ...]]:
    rows = sync_conn.exec_driver_sql(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    )
    return [tuple(row) for row in rows]


def _head(settings: Settings) -> str:
    head = ScriptDirectory.from_config(alembic_config(settings.sqlalchemy_url)).get_current_head()
    assert head is not None
    return head


async def _version(db: Database) -> list[str]:
    async with db.engine.connect() as conn:
        result = await conn.execute(text("SELECT version_num FROM alembic_version"))
        return [row[0] for row in result]


async def test_models_and_migrations_agree(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    await migrate(settings)
    db = Database(settings)
    try:
        async with db.engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await db.dispose()
    assert diff == []


@pytest.mark.sqlite_only
async def test_sqlite_runs_in_wal_with_full_sync_and_foreign_keys(runtime: Runtime) -> None:
    for engine in (runtime.db.engine, runtime.db.write_engine):
        async with engine.connect() as conn:
            journal = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            synchronous = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
            foreign_keys = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            busy_timeout = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
        assert journal == "wal"
        assert synchronous == 2  # FULL
        assert foreign_keys == 1
        assert busy_timeout == runtime.settings.sqlite_busy_timeout_ms


async def test_migrate_twice_is_a_no_op(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    await migrate(settings)
    db = Database(settings)
    try:
        async with db.engine.connect() as conn:
            before = await conn.run_sync(_schema)
        assert await _version(db) == [_head(settings)]

        await migrate(settings)

        async with db.engine.connect() as conn:
            after = await conn.run_sync(_schema)
        assert after == before
        assert await _version(db) == [_head(settings)]
    finally:
        await db.dispose()


async def test_migrate_keeps_existing_rows(runtime: Runtime) -> None:
    account = await create_account(runtime)
    await migrate(runtime.settings)
    async with runtime.db.session(write=False) as session:
        ids = list((await session.scalars(select(Account.id))).all())
    assert ids == [account.account_id]
