"""SQLAlchemy statements for accounts. Never commits."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from keyhouse.db.session import DbSession
from keyhouse.ids import is_id
from keyhouse.models import Account

__all__ = ["AccountRepository"]


class AccountRepository:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get(self, account_id: str) -> Account | None:
        if not is_id(account_id, "acc"):
            return None
        result = await self.session.execute(select(Account).where(Account.id == account_id))
        return result.scalar_one_or_none()

    async def list(self) -> Sequence[Account]:
        result = await self.session.execute(
            select(Account).order_by(Account.created_at.desc(), Account.id.desc())
        )
        return result.scalars().all()

    async def get_for_update(self, account_id: str) -> Account | None:
        """The account, locked until the transaction ends (PostgreSQL; SQLite's
        write transactions are serialised already), so two requests cannot
        both take the last key of a plan."""
        if not is_id(account_id, "acc"):
            return None
        result = await self.session.execute(
            select(Account).where(Account.id == account_id).with_for_update()
        )
        return result.scalar_one_or_none()

    def add(self, account: Account) -> None:
        self.session.add(account)

    async def flush(self) -> None:
        await self.session.flush()
