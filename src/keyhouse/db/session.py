"""What services and repositories may do with a session, and SQLite's read session.

``DbSession`` is the type every service, repository and endpoint takes: the
part of ``AsyncSession`` keyhouse uses (no commit: the session's owner,
``Database.session``, commits once). Two classes implement all of it:

* ``AsyncSession``: every session on PostgreSQL, and write sessions on SQLite.
* ``InlineSession``: read sessions on SQLite. Through aiosqlite every
  statement costs several hops to its thread and back (~1.5 ms for a
  one-row lookup, bench "cache miss"), while a WAL read of a few hundred
  rows takes well under that and never waits for a writer
  (https://www.sqlite.org/wal.html#concurrency). So reads run inline, on
  the event loop's thread, in autocommit (each statement its own snapshot).
  A write is no error: the first one opens ``BEGIN IMMEDIATE`` and it, and
  everything after it in the session, runs in a worker thread (waiting for
  SQLite's write lock, up to the busy timeout, and the fsync of the commit
  must not stop the event loop); the session's writes commit or roll back
  together, as on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any, Protocol, TypeVar, TypeVarTuple, overload

from sqlalchemy import Connection, Engine, Executable, Result, ScalarResult, TextClause
from sqlalchemy.orm import Session
from sqlalchemy.sql.selectable import TypedReturnsRows

__all__ = ["DbConnection", "DbSession", "InlineSession"]

_T = TypeVar("_T")
_O = TypeVar("_O")
_Ts = TypeVarTuple("_Ts")


class DbConnection(Protocol):
    """Core statements on a session's connection: plain rows, no ORM loading."""

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*_Ts], parameters: Any = None, /
    ) -> Result[*_Ts]: ...
    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None, /
    ) -> Result[*tuple[Any, ...]]: ...


class DbSession(Protocol):
    """A unit of work in one transaction; ``Database.session`` commits it."""

    @property
    def info(self) -> dict[Any, Any]: ...

    def add(self, instance: object, /) -> None: ...

    async def flush(self) -> None: ...

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*_Ts], params: Any = None, /
    ) -> Result[*_Ts]: ...
    @overload
    async def execute(
        self, statement: Executable, params: Any = None, /
    ) -> Result[*tuple[Any, ...]]: ...

    @overload
    async def scalar(self, statement: TypedReturnsRows[_T], params: Any = None, /) -> _T | None: ...
    @overload
    async def scalar(self, statement: Executable, params: Any = None, /) -> Any: ...

    @overload
    async def scalars(
        self, statement: TypedReturnsRows[_T], params: Any = None, /
    ) -> ScalarResult[_T]: ...
    @overload
    async def scalars(self, statement: Executable, params: Any = None, /) -> ScalarResult[Any]: ...

    async def get(self, entity: type[_O], ident: Any, /) -> _O | None: ...

    async def connection(self) -> DbConnection: ...


def _reads(statement: Executable) -> bool:
    """Whether ``statement`` only reads: it may then run inline, in autocommit."""
    if isinstance(statement, TextClause):
        return statement.text.lstrip()[:6].upper() == "SELECT"
    return bool(getattr(statement, "is_select", False))


async def _in_worker(fn: Callable[[], _T]) -> _T:
    """``fn()`` in the default executor, waited for even if the caller is cancelled.

    The worker uses the session's connection: rolling back or returning it
    to the pool while the worker still runs would have two threads on one
    sqlite3 connection.
    """
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    cancelled: asyncio.CancelledError | None = None
    while True:
        try:
            result = await asyncio.shield(future)
            break
        except asyncio.CancelledError as exc:
            if future.done():
                raise
            cancelled = exc
    if cancelled is not None:
        raise cancelled
    return result


class InlineSession:
    """A read session on SQLite: reads inline, writes in a worker thread (module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._connection: Connection | None = None
        self._session: Session | None = None
        self._writing = False
        self.info: dict[Any, Any] = {}

    # -- the connection and the ORM session, made on first use ---------------------

    def _conn(self) -> Connection:
        if self._connection is None:
            self._connection = self._engine.connect()
            self._connection.begin()
        return self._connection

    @property
    def sync_session(self) -> Session:
        # Made when first needed: a listing runs Core statements on the
        # connection only, and opening and closing a Session cost it ~55 us
        # of ~430 (timeit of a 200-key listing).
        if self._session is None:
            self._session = Session(bind=self._conn(), info=self.info, expire_on_commit=False)
        return self._session

    def _pending(self) -> bool:
        """Whether the ORM session holds changes (the next query would flush them)."""
        session = self._session
        return session is not None and bool(session.new or session.deleted or session.dirty)

    async def _write(self, fn: Callable[[], _T]) -> _T:
        """``fn()`` in the session's write transaction, opened by the first write."""
        connection = self._conn()
        self._writing = True

        def run() -> _T:
            raw: Any = connection.connection.dbapi_connection
            if not raw.in_transaction:
                raw.execute("BEGIN IMMEDIATE")
            return fn()

        return await _in_worker(run)

    # -- DbSession -------------------------------------------------------------------

    def add(self, instance: object, /) -> None:
        self.sync_session.add(instance)

    async def flush(self) -> None:
        if self._pending():
            await self._write(self.sync_session.flush)

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*_Ts], params: Any = None, /
    ) -> Result[*_Ts]: ...
    @overload
    async def execute(
        self, statement: Executable, params: Any = None, /
    ) -> Result[*tuple[Any, ...]]: ...
    async def execute(self, statement: Executable, params: Any = None, /) -> Any:
        if self._writing or self._pending() or not _reads(statement):
            return await self._write(
                functools.partial(self.sync_session.execute, statement, params)
            )
        return self.sync_session.execute(statement, params)

    @overload
    async def scalar(self, statement: TypedReturnsRows[_T], params: Any = None, /) -> _T | None: ...
    @overload
    async def scalar(self, statement: Executable, params: Any = None, /) -> Any: ...
    async def scalar(self, statement: Executable, params: Any = None, /) -> Any:
        return (await self.execute(statement, params)).scalar()

    @overload
    async def scalars(
        self, statement: TypedReturnsRows[_T], params: Any = None, /
    ) -> ScalarResult[_T]: ...
    @overload
    async def scalars(self, statement: Executable, params: Any = None, /) -> ScalarResult[Any]: ...
    async def scalars(self, statement: Executable, params: Any = None, /) -> Any:
        return (await self.execute(statement, params)).scalars()

    async def get(self, entity: type[_O], ident: Any, /) -> _O | None:
        if self._writing or self._pending():
            return await self._write(functools.partial(self.sync_session.get, entity, ident))
        return self.sync_session.get(entity, ident)

    async def connection(self) -> DbConnection:
        return _InlineConnection(self)

    # -- the end of the session (Database.session) -----------------------------------

    async def commit(self) -> None:
        if self._pending():
            await self._write(self.sync_session.flush)
        if self._connection is None:
            return
        if self._writing:
            await _in_worker(self._connection.commit)
        else:
            self._connection.commit()

    async def rollback(self) -> None:
        if self._connection is None:
            return
        if self._writing:
            await _in_worker(self._connection.rollback)
        else:
            self._connection.rollback()

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
        if self._connection is not None:
            self._connection.close()


class _InlineConnection:
    """``InlineSession.connection()``: Core statements on the session's connection."""

    def __init__(self, session: InlineSession) -> None:
        self._session = session

    @overload
    async def execute(
        self, statement: TypedReturnsRows[*_Ts], parameters: Any = None, /
    ) -> Result[*_Ts]: ...
    @overload
    async def execute(
        self, statement: Executable, parameters: Any = None, /
    ) -> Result[*tuple[Any, ...]]: ...
    async def execute(self, statement: Executable, parameters: Any = None, /) -> Any:
        session = self._session
        connection = session._conn()
        if session._writing or not _reads(statement):
            return await session._write(
                functools.partial(connection.execute, statement, parameters)
            )
        return connection.execute(statement, parameters)
