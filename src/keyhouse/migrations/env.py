"""Alembic environment: batch mode on SQLite, async engines.

``keyhouse migrate`` passes an open connection in ``config.attributes``;
``alembic`` on the command line (for ``revision --autogenerate``) connects
with the configured URL itself.
"""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context
from sqlalchemy.ext.asyncio import create_async_engine

from keyhouse import models  # noqa: F401  (registers the tables)
from keyhouse.config import Settings
from keyhouse.db.base import Base

target_metadata = Base.metadata


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_async_engine(url)
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


connection = context.config.attributes.get("connection")
if connection is not None:
    _run(connection)
else:
    configured = context.config.get_main_option("sqlalchemy.url")
    asyncio.run(_run_async(configured or Settings().sqlalchemy_url))
