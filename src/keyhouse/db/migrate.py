"""Run Alembic migrations from code (``keyhouse migrate``, ``serve``, tests)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config

from keyhouse.config import Settings
from keyhouse.db.engine import Database

__all__ = ["alembic_config", "migrate"]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


async def migrate(settings: Settings, revision: str = "head") -> None:
    """Upgrade the configured database to ``revision`` in one transaction."""
    db = Database(settings)
    try:
        cfg = alembic_config(settings.sqlalchemy_url)

        def _upgrade(sync_conn: Any) -> None:
            cfg.attributes["connection"] = sync_conn
            command.upgrade(cfg, revision)

        async with db.connect() as conn:
            await conn.run_sync(_upgrade)
    finally:
        await db.dispose()
