"""``lastUsedAt``, written behind.

Writing ``last_used_at`` on every verification would turn every read into a
write. Uses are kept in memory (the latest per key) and flushed in one
batched statement every flush interval: at most one write per key per
interval, whatever the traffic, and none for keys not used. The pending
values are merged into this process's own reads, so a key used a moment ago
already shows it. A graceful shutdown flushes what is pending.

Rows are written in key id order: two processes flushing the same keys at
once then lock them in the same order and wait for each other, where in
arbitrary orders they deadlocked (PostgreSQL logged 21 ``deadlock detected``
in 10 minutes with 3 workers, issue 12). A flush that fails puts its values
back and the next flush writes them; writing one twice changes nothing, as
a value never moves ``last_used_at`` back.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import Table, bindparam, or_, update

from keyhouse.logs import get_logger
from keyhouse.models import ApiKey

if TYPE_CHECKING:
    from keyhouse.db.engine import Database

__all__ = ["LastUsed"]

log = get_logger("keyhouse.last_used")

_table = cast(Table, ApiKey.__table__)
# Never move lastUsedAt back: another process may have written a later use.
_FLUSH = (
    update(_table)
    .where(
        _table.c.id == bindparam("b_id"),
        or_(_table.c.last_used_at.is_(None), _table.c.last_used_at < bindparam("b_at")),
    )
    .values(last_used_at=bindparam("b_at"))
)


class LastUsed:
    def __init__(self) -> None:
        self._pending: dict[str, datetime] = {}
        self.rows_written = 0
        self.flushes = 0

    def touch(self, key_id: str, at: datetime) -> None:
        self._pending[key_id] = at

    def pending_lookup(self) -> Callable[[str], datetime | None]:
        """The pending use of a key id, as the dict's own ``get``: for a loop over
        many keys with no ``await`` in it (a flush replaces the dict)."""
        return self._pending.get

    async def flush(self, db: Database) -> int:
        """Write what is pending in one statement, in key id order; the number of keys sent."""
        if not self._pending:
            return 0
        batch, self._pending = self._pending, {}
        params = [{"b_id": key_id, "b_at": batch[key_id]} for key_id in sorted(batch)]
        try:
            async with db.session(write=True) as session:
                await session.execute(_FLUSH, params)
        except Exception:
            # Put them back (newer uses win) and try again at the next flush.
            for key_id, at in batch.items():
                if key_id not in self._pending or self._pending[key_id] < at:
                    self._pending[key_id] = at
            raise
        self.rows_written += len(params)
        self.flushes += 1
        return len(params)

    async def run(self, db: Database, interval: float) -> None:
        """Flush every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.flush(db)
            except Exception as exc:
                log.warning("last_used_flush_failed", error=type(exc).__name__)
