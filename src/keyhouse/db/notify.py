"""Key changes reach every process: PostgreSQL NOTIFY in the change's transaction.

A service that changes a key marks its hash in ``session.info``; before the
transaction commits, one ``pg_notify`` per key is sent in it, so the
notification goes out if and only if the change commits (the change's audit
event, in the same transaction, is its durable record). Every process
LISTENs on a connection of its own and drops those keys from its cache
within milliseconds.

NOTIFY is not replayed to a listener that was disconnected. While it is cut
off, the cache keeps its entries: each lives at most the cache TTL (2 s by
default) from the start of the read that made it, so a change whose
notification was lost is honoured within the TTL, and keys cached before an
outage keep verifying until then (clearing the cache when the connection
drops turned them into 503s at once, issue 12). When the listener is back,
the database answers again: it clears the whole cache then, so a change
missed during the gap is honoured at once rather than at the entries' TTL,
and a lookup still running from before cannot cache what it read (the
cache's epoch check).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

from sqlalchemy import event, text
from sqlalchemy.orm import Session

from keyhouse.logs import get_logger

__all__ = [
    "CHANNEL",
    "CLEAR_CACHE_AFTER_COMMIT",
    "INVALIDATE_AFTER_COMMIT",
    "CacheByHash",
    "ChangeListener",
    "NotifyingSession",
]

log = get_logger("keyhouse.notify")

CHANNEL = "keyhouse_keys"
INVALIDATE_AFTER_COMMIT = "keyhouse.invalidate_after_commit"
# Cached keys carry their account's plan: a plan change drops them all.
CLEAR_CACHE_AFTER_COMMIT = "keyhouse.clear_cache_after_commit"
_CLEAR_ALL = "*"
_NOTIFY = text("SELECT pg_notify(:channel, :payload)")


class NotifyingSession(Session):
    """The session class on PostgreSQL: sends the key changes before committing."""


@event.listens_for(NotifyingSession, "before_commit")
def _notify_changes(session: Session) -> None:
    payloads = [h.hex() for h in session.info.get(INVALIDATE_AFTER_COMMIT, ())]
    if session.info.get(CLEAR_CACHE_AFTER_COMMIT):
        payloads = [_CLEAR_ALL]
    for payload in payloads:
        session.execute(_NOTIFY, {"channel": CHANNEL, "payload": payload})


class CacheByHash(Protocol):
    """What the listener needs of a cache keyed by key hash (the keys cache has it).

    Declared here so that the database layer knows no domain package.
    """

    def invalidate(self, key_hash: bytes) -> None: ...

    def clear(self) -> None: ...


class ChangeListener:
    """LISTENs for key changes and keeps this process's cache honest."""

    def __init__(self, dsn: str, cache: CacheByHash, *, timeout: float = 2.0) -> None:
        self._dsn = dsn
        self._cache = cache
        self._timeout = timeout
        self.connected = asyncio.Event()
        self.notifications = 0

    def _on_notify(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        self.notifications += 1
        if payload == _CLEAR_ALL:
            self._cache.clear()
            return
        with contextlib.suppress(ValueError):
            self._cache.invalidate(bytes.fromhex(payload))

    async def run(self) -> None:
        import asyncpg

        while True:
            conn = None
            try:
                conn = await asyncpg.connect(
                    self._dsn,
                    timeout=self._timeout,
                    server_settings={"application_name": "keyhouse-listen"},
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                # What changed while we were not listening is unknown: forget it all.
                self._cache.clear()
                self.connected.set()
                while not lost.is_set():
                    # A peer that vanished without a FIN is only noticed by talking.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), 5)
                    if not lost.is_set():
                        await conn.execute("SELECT 1", timeout=self._timeout)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    log.warning("listen_connection_lost", error=type(exc).__name__)
            finally:
                self.connected.clear()
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), self._timeout)
            await asyncio.sleep(0.5)
