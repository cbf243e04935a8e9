"""Key changes and the key cache: recorded in one place, applied in one place.

A service that changes what verification reads (a key's state, or an
account's plan, which every cached key carries) calls ``mark_changed`` with
the session that makes the change. It drops the entry from this process's
cache at once, so this process stops using the old state, and notes it in
the session so that:

* before the commit, on PostgreSQL, ``db/notify.py`` sends one NOTIFY per
  key (or one "clear all") in the same transaction, for the other processes;
* after the commit, ``after_commit`` drops it here again: a lookup that ran
  between the change and the commit cannot leave the old state cached.

``session`` opens a session and runs ``after_commit`` when it has
committed: the request pipeline, verification's own writes and the CLI use
it, so no caller has to remember the second step.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import Enum
from typing import Final, Literal

from keyhouse.db.notify import CLEAR_CACHE_AFTER_COMMIT, INVALIDATE_AFTER_COMMIT
from keyhouse.db.session import DbSession
from keyhouse.runtime import Runtime

__all__ = ["ALL", "after_commit", "mark_changed", "session"]


class _Everything(Enum):
    ALL = "all"


# Every cached key: an account's plan changed, and each cached key carries one.
ALL: Final = _Everything.ALL


def mark_changed(
    session: DbSession, runtime: Runtime, key_hash: bytes | Literal[_Everything.ALL]
) -> None:
    """The key with ``key_hash`` (or ``ALL``) changed in ``session``'s transaction."""
    if key_hash is ALL:
        runtime.cache.clear()
        session.info[CLEAR_CACHE_AFTER_COMMIT] = True
    else:
        runtime.cache.invalidate(key_hash)
        session.info.setdefault(INVALIDATE_AFTER_COMMIT, set()).add(key_hash)


def after_commit(session: DbSession, runtime: Runtime) -> None:
    """Once ``session`` committed: drop what it changed from this process's cache."""
    for key_hash in session.info.pop(INVALIDATE_AFTER_COMMIT, ()):
        runtime.cache.invalidate(key_hash)
    if session.info.pop(CLEAR_CACHE_AFTER_COMMIT, False):
        runtime.cache.clear()


@asynccontextmanager
async def session(runtime: Runtime, *, write: bool) -> AsyncIterator[DbSession]:
    """A session committed on leaving, then ``after_commit`` (not after a rollback)."""
    async with runtime.db.session(write=write) as db_session:
        yield db_session
    after_commit(db_session, runtime)
