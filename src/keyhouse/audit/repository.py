"""SQLAlchemy statements for the audit log. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select

from keyhouse.db.session import DbSession
from keyhouse.models import Event

__all__ = ["EventRepository"]


class EventRepository:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    def add(self, event: Event) -> None:
        self.session.add(event)

    async def list(
        self,
        account_id: str | None,
        *,
        limit: int,
        starting_after: str | None = None,
        environment_id: str | None = None,
    ) -> Sequence[Event]:
        """Newest first; ``account_id`` None: every account's (the operator's log)."""
        stmt = select(Event)
        if account_id is not None:
            stmt = stmt.where(Event.account_id == account_id)
        if environment_id is not None:
            stmt = stmt.where(Event.environment_id == environment_id)
        if starting_after is not None:
            stmt = stmt.where(Event.id < starting_after)
        stmt = stmt.order_by(Event.id.desc()).limit(limit)
        result = await self.session.execute(stmt)
        return result.scalars().all()

    async def delete_before(self, id_floor: str, *, limit: int, skip_locked: bool) -> int:
        """Delete up to ``limit`` of the oldest events whose id sorts below ``id_floor``.

        ``skip_locked`` (PostgreSQL): rows another process is deleting are
        left to it, not waited for. Deleting what is gone deletes nothing:
        several processes may prune at once.
        """
        oldest = select(Event.id).where(Event.id < id_floor).order_by(Event.id).limit(limit)
        if skip_locked:
            oldest = oldest.with_for_update(skip_locked=True)
        result = await self.session.execute(
            delete(Event).where(Event.id.in_(oldest.scalar_subquery()))
        )
        deleted: int = getattr(result, "rowcount", 0) or 0
        return deleted
