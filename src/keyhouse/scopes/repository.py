"""SQLAlchemy statements for the scope catalog. Never commits."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import delete, or_, select, text

from keyhouse.db.session import DbSession
from keyhouse.models import ApiKey, CatalogEntry

__all__ = ["CatalogRepository", "KeyLimits", "Kind"]

Kind = Literal["scope", "attribute"]

# PostgreSQL advisory lock id of the catalog ("khcatalg" in ASCII). A write of
# a key's scopes holds it shared (``lock(shared=True)``) until its commit, a
# catalog replace holds it exclusive: the replace waits for the key, then sees
# it when it checks what keys still use. SQLite's write transactions are
# serialised whole (BEGIN IMMEDIATE) and need nothing.
_LOCK_ID = 0x6B68636174616C67

# (key id, scopes, restrictions) as stored.
KeyLimits = tuple[str, list[str] | None, dict[str, Any] | None]


class CatalogRepository:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def lock(self, *, shared: bool) -> None:
        """The catalog's lock until the transaction ends (PostgreSQL; a no-op on SQLite)."""
        # An AsyncSession's bind is its engine; SQLite's inline read session has none.
        dialect = getattr(getattr(self.session, "bind", None), "dialect", None)
        if getattr(dialect, "name", None) != "postgresql":
            return
        name = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
        await self.session.execute(text(f"SELECT {name}(:id)"), {"id": _LOCK_ID})

    async def entries(self) -> Sequence[CatalogEntry]:
        """Every entry, by kind then name."""
        result = await self.session.execute(
            select(CatalogEntry).order_by(CatalogEntry.kind, CatalogEntry.name)
        )
        return result.scalars().all()

    async def names(self) -> Sequence[tuple[str, str]]:
        """``(kind, name)`` of every entry: what key validation needs, no descriptions."""
        result = await self.session.execute(select(CatalogEntry.kind, CatalogEntry.name))
        return [(kind, name) for kind, name in result.all()]

    async def replace(self, entries: Sequence[CatalogEntry]) -> None:
        await self.session.execute(delete(CatalogEntry))
        for entry in entries:
            self.session.add(entry)
        await self.session.flush()

    async def restricted_keys(self) -> Sequence[KeyLimits]:
        """``(id, scopes, restrictions)`` of every key that is not revoked and has either."""
        result = await self.session.execute(
            select(ApiKey.id, ApiKey.scopes, ApiKey.restrictions)
            .where(
                ApiKey.revoked.is_(False),
                or_(ApiKey.scopes.is_not(None), ApiKey.restrictions.is_not(None)),
            )
            .order_by(ApiKey.id)
        )
        return [(row[0], row[1], row[2]) for row in result.all()]
