"""Usage rows in the database: read, add a batch of counts, count one atomically.

Every write bumps the row's ``version``, and a request taken here (``take``)
counts in ``fallback`` too (limits/limiter.py says why). Rows
are written in one order everywhere, sorted by (account, period), so two
processes adding counts to the same rows at once wait for each other
instead of deadlocking (PostgreSQL locks the rows of a multi-row INSERT in
the order of its VALUES).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keyhouse.db.session import DbSession
from keyhouse.models import Usage, UsageFlush

__all__ = ["Counted", "UsageRepository"]

# Rows per INSERT: 3 parameters a row stays well under the 32,767 parameters
# of a PostgreSQL statement (asyncpg) and SQLite's 32,766 variables.
_ROWS_PER_STATEMENT = 5000

Row = tuple[str, str]  # (account_id, period)


class Counted(NamedTuple):
    """A usage row's counts (all 0 without a row)."""

    requests: int
    version: int
    fallback: int


class UsageRepository:
    """SQLAlchemy statements for the ``usage`` and ``usage_flushes`` tables. Never commits."""

    def __init__(self, session: DbSession, *, is_sqlite: bool) -> None:
        self.session = session
        self._insert: Any = sqlite.insert if is_sqlite else postgresql.insert

    async def get(self, account_id: str, period: str) -> int:
        return (await self.get_counted(account_id, period)).requests

    async def get_counted(self, account_id: str, period: str) -> Counted:
        result = await self.session.execute(
            select(Usage.requests, Usage.version, Usage.fallback).where(
                Usage.account_id == account_id, Usage.period == period
            )
        )
        row = result.one_or_none()
        return Counted(0, 0, 0) if row is None else Counted(*map(int, row))

    async def ensure(self, account_id: str, period: str) -> None:
        stmt = self._insert(Usage).values(
            account_id=account_id, period=period, requests=0, version=0, fallback=0
        )
        await self.session.execute(stmt.on_conflict_do_nothing())

    async def add_many(self, counts: Iterable[tuple[str, str, int]]) -> dict[Row, Counted]:
        """Add each ``(account_id, period, delta)``; the rows' counts after it.

        Sorted by (account, period) and sent as multi-row upserts: one fixed
        lock order for every process (no deadlock), one statement per 5,000
        rows.
        """
        ordered = sorted(counts)
        counted: dict[Row, Counted] = {}
        for start in range(0, len(ordered), _ROWS_PER_STATEMENT):
            chunk = ordered[start : start + _ROWS_PER_STATEMENT]
            stmt = self._insert(Usage).values(
                [
                    {"account_id": a, "period": p, "requests": d, "version": 1, "fallback": 0}
                    for a, p, d in chunk
                ]
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[Usage.account_id, Usage.period],
                set_={
                    "requests": Usage.requests + stmt.excluded.requests,
                    "version": Usage.version + 1,
                },
            ).returning(
                Usage.account_id, Usage.period, Usage.requests, Usage.version, Usage.fallback
            )
            result = await self.session.execute(stmt)
            for account_id, period, *counts in result:
                counted[(account_id, period)] = Counted(*map(int, counts))
        return counted

    async def take(self, account_id: str, period: str, limit: int) -> Counted | None:
        """Count one request (in ``fallback`` too) if the count is below ``limit``.

        One statement. The row's counts after it, or None when the count had
        reached the limit (or there is no row: ``ensure`` it first).
        """
        result = await self.session.execute(
            update(Usage)
            .where(Usage.account_id == account_id, Usage.period == period, Usage.requests < limit)
            .values(
                requests=Usage.requests + 1,
                version=Usage.version + 1,
                fallback=Usage.fallback + 1,
            )
            .returning(Usage.requests, Usage.version, Usage.fallback)
            .execution_options(synchronize_session=False)
        )
        row = result.one_or_none()
        return None if row is None else Counted(*map(int, row))

    async def claim_flush(self, instance: str, batch: int, at: datetime) -> bool:
        """Record that ``instance`` saves ``batch`` now; False if it already had.

        Batches of an instance are numbered upwards and a batch is retried
        until saved, so a batch number not above the recorded one was saved by
        an attempt whose answer was lost. A concurrent attempt still running
        holds the row: this one waits for it, then sees its outcome.
        """
        stmt = self._insert(UsageFlush).values(instance=instance, batch=batch, flushed_at=at)
        stmt = stmt.on_conflict_do_update(
            index_elements=[UsageFlush.instance],
            set_={"batch": stmt.excluded.batch, "flushed_at": stmt.excluded.flushed_at},
            where=UsageFlush.batch < stmt.excluded.batch,
        ).returning(UsageFlush.batch)
        result = await self.session.execute(stmt)
        return result.one_or_none() is not None

    async def prune_flushes(self, before: datetime) -> None:
        """Forget the marks of processes that have not saved anything since ``before``."""
        await self.session.execute(delete(UsageFlush).where(UsageFlush.flushed_at < before))
