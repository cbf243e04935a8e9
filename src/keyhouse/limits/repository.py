"""Usage rows in the database: read, add, and count one atomically."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite

from keyhouse.db.session import DbSession
from keyhouse.models import Usage

__all__ = ["UsageRepository"]


class UsageRepository:
    """SQLAlchemy statements for the ``usage`` table. Never commits."""

    def __init__(self, session: DbSession, *, is_sqlite: bool) -> None:
        self.session = session
        self._insert: Any = sqlite.insert if is_sqlite else postgresql.insert
        # SQLite's two-argument max() is a scalar; PostgreSQL calls it greatest().
        self._greatest: Any = func.max if is_sqlite else func.greatest

    async def get(self, account_id: str, period: str) -> int:
        result = await self.session.execute(
            select(Usage.requests).where(Usage.account_id == account_id, Usage.period == period)
        )
        return int(result.scalar_one_or_none() or 0)

    async def ensure(self, account_id: str, period: str) -> None:
        stmt = self._insert(Usage).values(account_id=account_id, period=period, requests=0)
        await self.session.execute(stmt.on_conflict_do_nothing())

    async def add(self, account_id: str, period: str, delta: int) -> None:
        stmt = self._insert(Usage).values(account_id=account_id, period=period, requests=delta)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Usage.account_id, Usage.period],
            set_={"requests": Usage.requests + stmt.excluded.requests},
        )
        await self.session.execute(stmt)

    async def raise_to(self, account_id: str, period: str, value: int) -> None:
        """Set the count to ``value`` unless it is already higher."""
        stmt = self._insert(Usage).values(account_id=account_id, period=period, requests=value)
        stmt = stmt.on_conflict_do_update(
            index_elements=[Usage.account_id, Usage.period],
            set_={"requests": self._greatest(Usage.requests, stmt.excluded.requests)},
        )
        await self.session.execute(stmt)

    async def take(self, account_id: str, period: str, limit: int) -> bool:
        """Count one request if the count is below ``limit``; atomic in one statement."""
        result = await self.session.execute(
            update(Usage)
            .where(Usage.account_id == account_id, Usage.period == period, Usage.requests < limit)
            .values(requests=Usage.requests + 1)
            .execution_options(synchronize_session=False)
        )
        return getattr(result, "rowcount", 0) == 1
