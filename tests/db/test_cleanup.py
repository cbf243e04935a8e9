"""The PostgreSQL cleanup between tests covers every table the migrations make.

A table the cleanup missed would carry one test's rows into the next: tests
would pass or fail by their order. The cleanup takes its tables from the
models' metadata; this compares them with what Alembic actually built.
"""

from __future__ import annotations

import asyncpg

from tests.conftest import CLEANED_TABLES, pg_plain

# Alembic's bookkeeping: emptying it would make the next migrate start over.
NOT_CLEANED = {"alembic_version"}


async def test_every_migrated_table_is_emptied_between_tests(pg_url: str) -> None:
    conn = await asyncpg.connect(pg_plain(pg_url), timeout=5)
    try:
        rows = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables"
            " WHERE table_type = 'BASE TABLE'"
            " AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        )
    finally:
        await conn.close()
    migrated = {(r["table_schema"], r["table_name"]) for r in rows} - {
        ("public", name) for name in NOT_CLEANED
    }
    assert migrated, "the migrated database has no tables: the query looks in the wrong place"
    assert migrated - {("public", name) for name in CLEANED_TABLES} == set()
    # And the other way round: a model table the migrations lack would make
    # every PostgreSQL test fail at its TRUNCATE, with a less obvious message.
    assert {("public", name) for name in CLEANED_TABLES} - migrated == set()
