"""SQLAlchemy statements for idempotency records. Never commits.

Core statements with plain rows, no ORM instances: a record is claimed,
read, filled and reclaimed by statements whose outcome is decided by the
database (the primary key on ``(scope, key)``), never by an earlier read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import Table, delete, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite

from keyhouse.db.session import DbSession
from keyhouse.models import IdempotencyRecord

__all__ = ["IdempotencyRepository", "StoredRecord"]

_table = cast(Table, IdempotencyRecord.__table__)


class StoredRecord(NamedTuple):
    fingerprint: bytes
    status_code: int | None
    response_ciphertext: bytes | None
    enc_kid: str | None
    created_at: datetime


class IdempotencyRepository:
    def __init__(self, session: DbSession, *, is_sqlite: bool) -> None:
        self.session = session
        self._insert: Any = sqlite.insert if is_sqlite else postgresql.insert

    def _this(self, scope: str, key: str) -> Any:
        return (_table.c.scope == scope) & (_table.c.key == key)

    async def claim(self, scope: str, key: str, fingerprint: bytes, now: datetime) -> bool:
        """Insert the record, without an answer yet; False if one exists.

        On PostgreSQL, a record another transaction inserted and has not yet
        committed makes this wait for that transaction: then False if it
        committed, True (ours now) if it rolled back. On SQLite the write
        transactions are serialised already.
        """
        stmt = (
            self._insert(_table)
            .values(scope=scope, key=key, fingerprint=fingerprint, created_at=now)
            .on_conflict_do_nothing(index_elements=[_table.c.scope, _table.c.key])
            .returning(_table.c.scope)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def reclaim(
        self, scope: str, key: str, fingerprint: bytes, now: datetime, *, expired_before: datetime
    ) -> bool:
        """Take over an expired record (as ``claim``); False if it is no longer expired."""
        stmt = (
            update(_table)
            .where(self._this(scope, key), _table.c.created_at < expired_before)
            .values(
                fingerprint=fingerprint,
                created_at=now,
                status_code=None,
                response_ciphertext=None,
                enc_kid=None,
            )
            .returning(_table.c.scope)
        )
        return (await self.session.execute(stmt)).first() is not None

    async def get(self, scope: str, key: str) -> StoredRecord | None:
        stmt = select(
            _table.c.fingerprint,
            _table.c.status_code,
            _table.c.response_ciphertext,
            _table.c.enc_kid,
            _table.c.created_at,
        ).where(self._this(scope, key))
        row = (await self.session.execute(stmt)).first()
        return None if row is None else StoredRecord(*row)

    async def store(
        self, scope: str, key: str, *, status_code: int, ciphertext: bytes, kid: str
    ) -> None:
        await self.session.execute(
            update(_table)
            .where(self._this(scope, key))
            .values(status_code=status_code, response_ciphertext=ciphertext, enc_kid=kid)
        )

    async def release(self, scope: str, key: str) -> None:
        await self.session.execute(delete(_table).where(self._this(scope, key)))

    async def purge(self, *, expired_before: datetime, limit: int) -> int:
        """Delete up to ``limit`` expired records; how many went.

        Rows another transaction holds (a request reclaiming one, another
        process purging) are skipped, not waited for: two purges never
        wait on each other, so they cannot deadlock. (SQLite has no row
        locks; its write transactions are serialised.)
        """
        expired = (
            select(_table.c.scope, _table.c.key)
            .where(_table.c.created_at < expired_before)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        result = await self.session.execute(
            delete(_table).where(tuple_(_table.c.scope, _table.c.key).in_(expired))
        )
        return int(getattr(result, "rowcount", 0) or 0)
