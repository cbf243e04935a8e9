"""Run Alembic migrations from code (``keyhouse migrate``, ``serve``, tests)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from keyhouse.config import Settings
from keyhouse.db.engine import Database

__all__ = ["Migration", "alembic_config", "database_revision", "head_revision", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


@dataclass(frozen=True, slots=True)
class Migration:
    """What ``migrate`` did: the schema revision before (None: no schema) and after."""

    before: str | None
    after: str | None


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest schema revision this keyhouse knows."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def _current(sync_conn: Any) -> str | None:
    revision: str | None = MigrationContext.configure(sync_conn).get_current_revision()
    return revision


async def migrate(settings: Settings, revision: str = "head") -> Migration:
    """Upgrade the configured database to ``revision`` in one transaction."""
    db = Database(settings)
    try:
        cfg = alembic_config(settings.sqlalchemy_url)

        def _upgrade(sync_conn: Any) -> Migration:
            before = _current(sync_conn)
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)
            return Migration(before, _current(sync_conn))

        async with db.connect() as conn:
            return await conn.run_sync(_upgrade)
    finally:
        await db.dispose()


async def database_revision(db: Database) -> str | None:
    """The schema revision of ``db`` (None: no keyhouse schema there), changing nothing."""
    async with db.engine.connect() as conn:
        return await conn.run_sync(_current)
