"""Engines and sessions: one session per request, one commit.

SQLite (the zero-config default) runs in WAL mode with ``synchronous=FULL``
(an acknowledged commit is on disk: https://www.sqlite.org/wal.html#durability),
a busy timeout, and foreign keys on. Writes open with ``BEGIN IMMEDIATE``:
a deferred transaction that reads, then writes, fails with SQLITE_BUSY at
once when another writer got there first (the busy timeout does not apply to
that upgrade), while an immediate one waits its turn. Reads run in
autocommit and never wait for a writer (WAL). SQLAlchemy's recipe:
https://docs.sqlalchemy.org/en/20/dialects/sqlite.html#serializable-isolation-savepoints-transactional-ddl
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, exc, make_url, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from keyhouse.config import Settings
from keyhouse.db.notify import NotifyingSession
from keyhouse.db.session import DbConnection, DbSession, InlineSession
from keyhouse.logs import get_logger

__all__ = [
    "CONFIRM_COMMIT",
    "Database",
    "DatabaseUnreachable",
    "Reachability",
    "prepare_sqlite_file",
]

_T = TypeVar("_T")

log = get_logger("keyhouse.db")

# Set in a session's ``info`` (the request pipeline does, for writes): on
# PostgreSQL, a COMMIT that fails is checked before the failure is believed
# (``Database._commit_status``). One more statement before the COMMIT, so
# only where a lost answer matters: a client's write.
CONFIRM_COMMIT = "keyhouse.confirm_commit"
# NULL for a transaction that wrote nothing (it has no id: nothing to confirm).
_CURRENT_XID = text("SELECT pg_current_xact_id_if_assigned()::text")
_XACT_STATUS = text("SELECT pg_xact_status(CAST(:xid AS xid8))")


def prepare_sqlite_file(path: Path) -> None:
    """Create the database's directory (0700) and file (0600) before SQLite does.

    SQLite gives its -wal and -shm files the permissions of the database
    file, so they stay private too.
    """
    if not path.parent.exists():
        path.parent.mkdir(mode=0o700, parents=True)
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        os.close(fd)


def _sqlite_pragmas(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below emit BEGIN, not the driver.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()


def refuse_closed_connection(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Pool "checkout" listener: what ``pool_pre_ping`` caught, without its round trips.

    The ping cost three round trips per checkout on asyncpg (BEGIN, ";",
    ROLLBACK), most of a cache miss's CPU (cProfile). A connection the
    server closed (a restart, ``pg_terminate_backend``, an idle timeout) is
    known closed to asyncpg as soon as the event loop has read the close,
    and a connection a checkout listener refuses is replaced by the pool
    (https://docs.sqlalchemy.org/en/20/core/pooling.html#custom-legacy-pessimistic-ping).
    A close not yet read is found by the first statement on it: the pool
    then drops every connection older than the failure, ``Database.read``
    repeats its read, and a request's session answers 503.
    """
    if dbapi_connection.driver_connection.is_closed():
        raise exc.DisconnectionError("the server closed this connection")


def terminate_invalidated(dbapi_connection: Any, _record: Any, _exception: Any) -> None:
    """Pool "invalidate" listener: close an invalidated connection now, without a goodbye.

    SQLAlchemy closes an invalidated asyncpg connection gracefully, waiting
    up to 2 s (a fixed timeout in its asyncpg dialect) for a server that, on
    a dead or black-holed link, never answers: a statement that timed out
    after 2 s then answered 503 after 4 (measured through tests/proxy.py's
    black hole). ``terminate()`` closes the socket at once; the graceful
    close that follows finds it closed. The server sees the socket close.
    """
    if dbapi_connection is not None:
        dbapi_connection.driver_connection.terminate()


class DatabaseUnreachable(ConnectionError):
    """Not tried: the database failed to answer a moment ago (``Reachability``)."""


def _timed_out(error: BaseException) -> bool:
    seen: BaseException | None = error
    for _ in range(4):  # the error, what it wraps (DBAPIError.orig), its cause
        if seen is None:
            return False
        if isinstance(seen, TimeoutError):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


class Reachability:
    """After the database failed to answer, no new connection is tried for ``window`` s.

    A request waiting for a pooled connection while the database is gone
    gets a slot only when a hung statement or connect times out, then
    connects and waits again: of 40 requests at once through a black-holed
    link (tests/db/test_outages.py), the last got its 503 after 12 s. A
    connect that failed, or a statement that timed out while the database
    answered nothing else since it began, open this window (the connect
    timeout); meanwhile connecting fails at once, so every request's 503
    comes within the timeout. A statement that timed out while others were
    answered (waiting for a lock under load) opens nothing. Pooled
    connections still serve, and the first connect after the window probes
    again: service resumes at most one window after the database is back.
    A connection the server closed (a restart) opens no window: it is
    replaced at once (``Database.read``).
    """

    def __init__(self, window: float) -> None:
        self.window = window
        self._closed_until = 0.0
        self._answered_at = 0.0

    def failed(self, started: float) -> None:
        """An attempt begun at ``started`` got no answer: open the window, unless
        the database answered something since (it is there, only slow or busy)."""
        if self._answered_at <= started:
            self._closed_until = time.monotonic() + self.window

    def check(self) -> None:
        if time.monotonic() < self._closed_until:
            raise DatabaseUnreachable("the database did not answer a moment ago")

    def on_connect(self, dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        """Dialect "do_connect" listener: check, connect, and note how it went."""
        self.check()
        started = time.monotonic()
        try:
            connection = dialect.connect(*cargs, **cparams)
        except (OSError, exc.DBAPIError) as error:  # refused, unreachable, timed out
            # Only a connect that got no answer opens the window: a refused
            # one fails at once anyway (nothing to bound), and gating it made
            # the first request after the database came back a 503 too.
            if _timed_out(error):
                self.failed(started)
            raise
        self._answered_at = time.monotonic()
        return connection

    def on_answer(self, *_args: Any) -> None:
        """Engine "after_cursor_execute" listener: the database answered a statement."""
        self._answered_at = time.monotonic()

    def on_error(self, context: ExceptionContext) -> None:
        """Engine "handle_error" listener: a statement that timed out (it began a timeout ago)."""
        if isinstance(context.original_exception, TimeoutError):
            self.failed(time.monotonic() - self.window)


def _sqlite_engine(url: str, busy_timeout_ms: int, begin: str | None) -> AsyncEngine:
    # hide_parameters: bound values (hashes, ciphertexts) stay out of error text.
    engine = create_async_engine(url, hide_parameters=True)
    _sqlite_pragmas(engine.sync_engine, busy_timeout_ms)

    if begin is not None:

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: Any) -> None:
            conn.exec_driver_sql(begin)

    return engine


class Database:
    """The engines of one process, and sessions on them."""

    def __init__(self, settings: Settings) -> None:
        url = settings.sqlalchemy_url
        self.url = url
        self.is_sqlite = settings.is_sqlite
        # PostgreSQL over a network: a request that needs a database that
        # does not answer gets 503 within KEYHOUSE_DB_CONNECT_TIMEOUT_SECONDS
        # (tests/db/test_outages.py, with connections held unanswered):
        # connecting and each statement are cut at it (asyncpg's timeout and
        # command_timeout), a connection that failed is dropped at once
        # (terminate_invalidated), and no connect is tried for as long after
        # one failed (Reachability). Waiting for a pooled connection while
        # the database answers is KEYHOUSE_DB_POOL_TIMEOUT_SECONDS. SQLite's
        # waits are its busy timeout.
        self.timeout: float | None = None
        self.reachability: Reachability | None = None
        if self.is_sqlite:
            database = make_url(url).database
            if database and database != ":memory:":
                prepare_sqlite_file(Path(database))
            timeout = settings.sqlite_busy_timeout_ms
            # Where an AsyncEngine is asked for (the readiness check); in
            # autocommit (each statement its own snapshot): no BEGIN to send.
            self.engine = _sqlite_engine(url, timeout, None)
            self.write_engine = _sqlite_engine(url, timeout, "BEGIN IMMEDIATE")
            # Read sessions run inline on the event loop's thread (db/session.py).
            # A connection each (a session that writes holds a transaction on
            # its own); more are opened rather than waited for, which would
            # block the event loop.
            self.inline_engine: Engine | None = create_engine(
                url.replace("sqlite+aiosqlite", "sqlite+pysqlite", 1),
                hide_parameters=True,
                max_overflow=-1,
                # Database.session ends every inline session with a commit or
                # a rollback before it returns the connection: the pool's own
                # rollback on return would be a second one (~3 us a request).
                pool_reset_on_return=None,
                # Used by the event loop's thread, and by a worker for writes.
                connect_args={"check_same_thread": False},
            )
            _sqlite_pragmas(self.inline_engine, timeout)
        else:
            pg_timeout = settings.db_connect_timeout_seconds
            self.timeout = pg_timeout
            self.engine = create_async_engine(
                url,
                hide_parameters=True,
                pool_size=settings.db_pool_size,
                max_overflow=settings.db_max_overflow,
                pool_timeout=settings.db_pool_timeout_seconds,
                connect_args={
                    "timeout": pg_timeout,
                    "command_timeout": pg_timeout,
                    "server_settings": {"application_name": "keyhouse"},
                },
            )
            event.listen(self.engine.sync_engine, "checkout", refuse_closed_connection)
            event.listen(self.engine.sync_engine, "invalidate", terminate_invalidated)
            self.reachability = Reachability(pg_timeout)
            event.listen(self.engine.sync_engine, "do_connect", self.reachability.on_connect)
            event.listen(self.engine.sync_engine, "handle_error", self.reachability.on_error)
            event.listen(
                self.engine.sync_engine, "after_cursor_execute", self.reachability.on_answer
            )
            self.write_engine = self.engine
            self.inline_engine = None
            # For statements that need no transaction (``reader``): no BEGIN
            # and COMMIT round trips. The same pool as ``engine``.
            self._autocommit = self.engine.execution_options(isolation_level="AUTOCOMMIT")
            self._confirm_timeout = float(pg_timeout)
        # On PostgreSQL a committed key change is also NOTIFYed to every process.
        session_class = Session if self.is_sqlite else NotifyingSession
        self._read = async_sessionmaker(
            self.engine, expire_on_commit=False, sync_session_class=session_class
        )
        self._write = async_sessionmaker(
            self.write_engine, expire_on_commit=False, sync_session_class=session_class
        )

    @asynccontextmanager
    async def session(self, *, write: bool) -> AsyncIterator[DbSession]:
        """A session in one transaction: committed on success, rolled back on error.

        A read session (``write=False``) may write too, on both engines; on
        SQLite it is an ``InlineSession`` (db/session.py).
        """
        if not write and self.inline_engine is not None:
            inline = InlineSession(self.inline_engine)
            try:
                yield inline
                await inline.commit()
            except BaseException:
                await inline.rollback()
                raise
            finally:
                inline.close()
            return
        maker = self._write if write else self._read
        async with maker() as session:
            xid: int | None = None
            try:
                async with session.begin():
                    yield session
                    if session.info.get(CONFIRM_COMMIT) and not self.is_sqlite:
                        assigned = await session.scalar(_CURRENT_XID)
                        xid = None if assigned is None else int(assigned)
            except Exception:
                if xid is None or await self._commit_status(xid) != "committed":
                    raise
                log.warning("commit_confirmed_after_error")

    async def _commit_status(self, xid: int) -> str | None:
        """What became of transaction ``xid`` whose COMMIT failed: asked on a new connection.

        A COMMIT that reached the server may have committed even though its
        answer was lost (the connection reset, or timed out, after the
        server wrote the commit): answering 503 then hid a write that had
        happened, and the retry of a roll with grace 0 got 409 (the key it
        had just made was never shown). PostgreSQL keeps each transaction's
        outcome, and ``pg_xact_status`` is the documented way to learn it
        "after the application and database server become disconnected
        while a COMMIT is in progress"
        (https://www.postgresql.org/docs/current/functions-info.html#FUNCTIONS-PG-SNAPSHOT).
        'in progress' (a backend that has not yet read the COMMIT, or the
        connection's end) is asked again until the connect timeout; None if
        the server cannot be asked: the caller answers 503, as before.
        """
        deadline = time.monotonic() + self._confirm_timeout
        while True:
            try:
                async with self._autocommit.connect() as connection:
                    status = await connection.scalar(_XACT_STATUS, {"xid": xid})
            except Exception as exc:
                log.warning("commit_status_unknown", error_type=type(exc).__name__)
                return None
            if status != "in progress" or time.monotonic() >= deadline:
                return str(status) if status is not None else None
            await asyncio.sleep(0.05)

    async def ping(self) -> None:
        """Raise unless the database answers a trivial query within the timeout, all told.

        Readiness: a pool whose connections are all busy for longer is not
        ready either.
        """
        async with asyncio.timeout(self.timeout), self.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[DbConnection]:
        """A connection for statements that need no transaction (each its own snapshot)."""
        if self.inline_engine is not None:
            async with self.session(write=False) as session:
                yield await session.connection()
            return
        # Not ``async with``: its exit closes in a task of its own (safe from
        # cancellation), two more turns of the event loop, ~15% of a cache
        # miss's CPU (cProfile). Returning an autocommit connection does no
        # I/O (no transaction to roll back), so nothing can interrupt it.
        connection = await self._autocommit.connect()
        try:
            yield connection
        finally:
            await connection.close()

    async def read(self, work: Callable[[DbConnection], Awaitable[_T]]) -> _T:
        """``work`` on a ``reader``, again on a new connection if the pooled one was dead.

        A connection whose close the event loop had not read yet when it was
        checked out (``refuse_closed_connection``) fails its first statement
        with ``connection_invalidated``; SQLAlchemy then drops every pooled
        connection older than the failure, and a read is safe to repeat.
        """
        try:
            async with self.reader() as connection:
                return await work(connection)
        except exc.DBAPIError as error:
            if not error.connection_invalidated:
                raise
        async with self.reader() as connection:
            return await work(connection)

    @asynccontextmanager
    async def connect(self) -> AsyncIterator[AsyncConnection]:
        async with self.write_engine.begin() as conn:
            yield conn

    @property
    def asyncpg_dsn(self) -> str:
        """The URL as asyncpg takes it (for LISTEN on a connection of its own)."""
        return self.asyncpg_dsn_of(self.url)

    @staticmethod
    def asyncpg_dsn_of(sqlalchemy_url: str) -> str:
        """A SQLAlchemy URL as an asyncpg DSN.

        In a DSN asyncpg reads libpq's ``sslmode``; an ``ssl`` there is sent to
        the server as a setting, which refuses it ("parameter "ssl" cannot be
        changed now", tried): the keyword SQLAlchemy passes goes back to its name.
        """
        url = make_url(sqlalchemy_url).set(drivername="postgresql")
        query = dict(url.query)
        if "ssl" in query and "sslmode" not in query:
            query["sslmode"] = query.pop("ssl")
            url = url.set(query=query)
        return url.render_as_string(hide_password=False)

    async def dispose(self) -> None:
        if self.inline_engine is not None:
            self.inline_engine.dispose()
        await self.engine.dispose()
        if self.write_engine is not self.engine:
            await self.write_engine.dispose()
