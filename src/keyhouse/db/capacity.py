"""How many PostgreSQL connections each process of ``serve --workers N`` may open.

Each process keeps a pool (``KEYHOUSE_DB_POOL_SIZE`` 10, plus up to
``KEYHOUSE_DB_MAX_OVERFLOW`` 20 under load) and one connection of its own
that LISTENs for key changes: 31 with the defaults, so ``--workers 4`` could
open 124 connections, past PostgreSQL's default ``max_connections`` of 100
(issue 13), and the 101st connect fails ("sorry, too many clients already")
for keyhouse and for whatever else uses the server.

At start, ``serve`` reads the server's limit and the connections other
clients hold, and gives each process its share (``size_pools``): the
configured pool where it fits, a smaller one where it does not, and a
refusal to start where a process could not have even one pooled connection
beside its listener. ``KEYHOUSE_DB_MAX_CONNECTIONS`` sets keyhouse's budget
instead (several instances on one server: give each its part).
"""

from __future__ import annotations

from dataclasses import dataclass

from keyhouse.config import Settings

__all__ = ["Budget", "PoolSizes", "read_budget", "size_pools"]

# Connections a process holds besides its pool: the LISTEN connection (db/notify.py).
PER_PROCESS_EXTRA = 1


@dataclass(frozen=True, slots=True)
class Budget:
    """The connections keyhouse may open, and where the number comes from."""

    connections: int
    max_connections: int | None = None  # the server's setting
    reserved: int = 0  # superuser_reserved_connections (+ reserved_connections, PG 16)
    in_use: int = 0  # other clients' connections at start


@dataclass(frozen=True, slots=True)
class PoolSizes:
    pool_size: int
    max_overflow: int
    per_process: int  # pool_size + max_overflow + the listener
    reduced: bool  # smaller than the settings asked for


def size_pools(budget: int, processes: int, pool_size: int, max_overflow: int) -> PoolSizes:
    """Each process's pool so that ``processes`` of them open at most ``budget`` connections.

    Raises ValueError when a process would not get one pooled connection.
    """
    wanted = pool_size + max_overflow + PER_PROCESS_EXTRA
    if processes * wanted <= budget:
        return PoolSizes(pool_size, max_overflow, wanted, reduced=False)
    share = budget // processes - PER_PROCESS_EXTRA  # pooled connections a process may have
    if share < 1:
        raise ValueError(
            f"PostgreSQL has {max(budget, 0)} connections for keyhouse; {processes} "
            f"processes need at least {1 + PER_PROCESS_EXTRA} each (a pooled one and the "
            "change listener): run fewer workers, raise the server's max_connections, or "
            "set KEYHOUSE_DB_MAX_CONNECTIONS"
        )
    pool = min(pool_size, share)
    overflow = min(max_overflow, share - pool)
    return PoolSizes(pool, overflow, pool + overflow + PER_PROCESS_EXTRA, reduced=True)


async def read_budget(settings: Settings) -> Budget:
    """keyhouse's connection budget on the server of ``settings`` (PostgreSQL)."""
    if settings.db_max_connections is not None:
        return Budget(settings.db_max_connections)
    import asyncpg

    from keyhouse.db.engine import Database

    dsn = Database.asyncpg_dsn_of(settings.sqlalchemy_url)
    timeout = settings.db_connect_timeout_seconds
    conn = await asyncpg.connect(dsn, timeout=timeout, command_timeout=timeout)
    try:
        row = await conn.fetchrow(
            "SELECT current_setting('max_connections')::int AS max_connections,"
            " current_setting('superuser_reserved_connections')::int"
            " + coalesce(current_setting('reserved_connections', true), '0')::int AS reserved,"
            " (SELECT count(*) FROM pg_stat_activity"
            "  WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())::int AS in_use"
        )
    finally:
        await conn.close()
    limit, reserved, in_use = row["max_connections"], row["reserved"], row["in_use"]
    # The reserved slots stay free for an administrator, even when keyhouse
    # connects as a superuser and could take them.
    return Budget(limit - reserved - in_use, limit, reserved, in_use)
