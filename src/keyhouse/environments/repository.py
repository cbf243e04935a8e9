"""SQLAlchemy statements for environments. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from keyhouse.db.session import DbSession
from keyhouse.ids import is_id
from keyhouse.models import Environment

__all__ = ["EnvironmentRepository"]


class EnvironmentRepository:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, account_id: str, environment_id: str) -> Environment | None:
        if not is_id(environment_id, "env"):
            return None
        result = await self.session.execute(
            select(Environment).where(
                Environment.id == environment_id, Environment.account_id == account_id
            )
        )
        return result.scalar_one_or_none()

    async def get_by_name(self, account_id: str, name: str) -> Environment | None:
        result = await self.session.execute(
            select(Environment).where(
                Environment.account_id == account_id, Environment.name == name
            )
        )
        return result.scalar_one_or_none()

    async def list(
        self, account_id: str, *, environment_id: str | None = None
    ) -> Sequence[Environment]:
        stmt = select(Environment).where(Environment.account_id == account_id)
        if environment_id is not None:
            stmt = stmt.where(Environment.id == environment_id)
        stmt = stmt.order_by(Environment.created_at.desc(), Environment.id.desc())
        result = await self.session.execute(stmt)
        return result.scalars().all()

    def add(self, environment: Environment) -> None:
        self.session.add(environment)

    async def flush(self) -> None:
        await self.session.flush()
