"""Expired idempotency records go: a background loop of each serving process."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from keyhouse.idempotency.repository import IdempotencyRepository
from keyhouse.idempotency.schemas import RETENTION
from keyhouse.logs import get_logger
from keyhouse.timeutil import utcnow

if TYPE_CHECKING:
    from keyhouse.db.engine import Database

__all__ = ["PURGE_BATCH", "PURGE_INTERVAL_SECONDS", "purge_expired", "run_purge"]

log = get_logger("keyhouse.idempotency")

PURGE_INTERVAL_SECONDS = 600.0
# Rows per transaction: a purge never holds many locks for long.
PURGE_BATCH = 1000


async def purge_expired(db: Database) -> int:
    """Delete every record past its 24 hours, a batch per transaction; how many went.

    A request that finds an expired record before this loop does treats it
    as absent (``IdempotencyService.begin``): expiry never waits for a purge.
    """
    total = 0
    while True:
        async with db.session(write=True) as session:
            repo = IdempotencyRepository(session, is_sqlite=db.is_sqlite)
            deleted = await repo.purge(expired_before=utcnow() - RETENTION, limit=PURGE_BATCH)
        total += deleted
        if deleted < PURGE_BATCH:
            return total


async def run_purge(db: Database, interval: float = PURGE_INTERVAL_SECONDS) -> None:
    """``purge_expired`` every ``interval`` seconds until cancelled."""
    while True:
        await asyncio.sleep(interval)
        try:
            await purge_expired(db)
        except Exception as exc:
            log.warning("idempotency_purge_failed", error=type(exc).__name__)
