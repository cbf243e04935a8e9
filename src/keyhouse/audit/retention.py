"""The audit log's retention: events older than ``KEYHOUSE_EVENTS_RETENTION_DAYS`` go.

Unset (the default), every event is kept. At 2M keys the log already held
719 MB (issue 13). Each serving process runs ``run_retention`` (a background
loop of ``Runtime``): once at start, then every ``RETENTION_INTERVAL_SECONDS``,
deleting in batches of ``RETENTION_BATCH`` rows, a transaction each, so no
delete holds many locks or a long transaction. Several processes may prune
at once: a delete is by id (ids sort by time, ``ids.id_floor``), and what
another process deleted is simply not there any more.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from keyhouse.audit.repository import EventRepository
from keyhouse.ids import id_floor
from keyhouse.logs import get_logger
from keyhouse.timeutil import utcnow

if TYPE_CHECKING:
    from keyhouse.db.engine import Database

__all__ = ["RETENTION_BATCH", "RETENTION_INTERVAL_SECONDS", "prune_events", "run_retention"]

log = get_logger("keyhouse.audit")

RETENTION_INTERVAL_SECONDS = 3600.0
RETENTION_BATCH = 1000


async def prune_events(db: Database, older_than: datetime, *, batch: int = RETENTION_BATCH) -> int:
    """Delete every event created before ``older_than``, a batch per transaction; how many."""
    floor = id_floor("evt", older_than)
    total = 0
    while True:
        async with db.session(write=True) as session:
            deleted = await EventRepository(session).delete_before(
                floor, limit=batch, skip_locked=not db.is_sqlite
            )
        total += deleted
        if deleted < batch:
            return total
        await asyncio.sleep(0)  # a long first prune leaves the event loop to requests


async def run_retention(
    db: Database, days: int, interval: float = RETENTION_INTERVAL_SECONDS
) -> None:
    """``prune_events`` of events older than ``days``, at start and every ``interval`` s."""
    while True:
        try:
            deleted = await prune_events(db, utcnow() - timedelta(days=days))
            if deleted:
                log.info("events_pruned", deleted=deleted, retention_days=days)
        except Exception as exc:
            log.warning("events_prune_failed", error=type(exc).__name__)
        await asyncio.sleep(interval)
