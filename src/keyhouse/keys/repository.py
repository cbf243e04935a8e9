"""SQLAlchemy statements for API keys. Never commits."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import String, Table, bindparam, func, or_, select, type_coerce
from sqlalchemy.exc import IntegrityError

from keyhouse.db.integrity import is_conflict
from keyhouse.db.session import DbConnection, DbSession
from keyhouse.ids import is_id
from keyhouse.keys.record import KeyRecord
from keyhouse.keys.restrictions import Restrictions
from keyhouse.limits.plan import Plan
from keyhouse.models import Account, ApiKey

__all__ = ["KeyRepository", "KeyView", "find_record"]


class KeyView(Protocol):
    """What a key object is made from: an ``ApiKey`` or a row of its columns."""

    @property
    def id(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def environment_id(self) -> str | None: ...
    @property
    def key_type(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def key_ciphertext(self) -> bytes: ...
    @property
    def enc_kid(self) -> str: ...
    @property
    def key_hint(self) -> str: ...
    @property
    def revoked(self) -> bool: ...
    # A datetime, or the stored text (see ``_stored_ts``).
    @property
    def created_at(self) -> datetime | str: ...
    @property
    def last_used_at(self) -> datetime | str | None: ...
    @property
    def expires_at(self) -> datetime | str | None: ...
    @property
    def scopes(self) -> list[str] | None: ...
    @property
    def restrictions(self) -> dict[str, Any] | None: ...


_table = cast(Table, ApiKey.__table__)


def _stored_ts(name: str) -> Any:
    # As stored: SQLite's text, or PostgreSQL's naive UTC datetime. Parsing
    # 3 x 10,000 timestamps into datetimes was a fifth of a large listing.
    return type_coerce(_table.c[name], String()).label(name)


# Table columns, not ORM attributes: the rows skip the ORM's loading machinery.
# keys.presenter.key_objects unpacks the rows in this order. No account_id: a
# listing is of one account, and each column costs ~0.1 us a row to fetch.
_VIEW_COLUMNS = (
    _table.c.id,
    _table.c.environment_id,
    _table.c.key_type,
    _table.c.name,
    _table.c.key_ciphertext,
    _table.c.enc_kid,
    _table.c.key_hint,
    _table.c.revoked,
    _stored_ts("created_at"),
    _stored_ts("last_used_at"),
    _stored_ts("expires_at"),
    _table.c.scopes,
    _table.c.restrictions,
)


@functools.cache
def _list_statement(by_environment: bool, by_type: bool, revoked: bool | None) -> Any:
    """The listing query for one combination of filters, built once.

    Building a 12-column select and its cache key cost ~0.3 ms a request
    (cProfile of GET /keys); a statement object that is reused keeps both.
    """
    stmt = select(*_VIEW_COLUMNS).where(_table.c.account_id == bindparam("account_id"))
    if by_environment:
        stmt = stmt.where(_table.c.environment_id == bindparam("environment_id"))
    if by_type:
        stmt = stmt.where(_table.c.key_type == bindparam("key_type"))
    if revoked is not None:
        stmt = stmt.where(_table.c.revoked.is_(revoked))
    return stmt.order_by(_table.c.created_at.desc(), _table.c.id.desc())


_accounts = cast(Table, Account.__table__)
# What verification needs of a key and its account's plan, by hash: table
# columns, built once. An ORM select(ApiKey, ...) loaded a whole instance
# (ciphertext included) through the Session's machinery on every miss.
_RECORD = (
    select(
        _table.c.id,
        _table.c.account_id,
        _table.c.environment_id,
        _table.c.key_type,
        _table.c.name,
        _table.c.revoked,
        _table.c.expires_at,
        _table.c.expiry_recorded_at.is_not(None),
        _accounts.c.monthly_requests,
        _accounts.c.rate_per_second,
        _accounts.c.burst,
        _table.c.scopes,
        _table.c.restrictions,
        _accounts.c.refuse_secret_keys_from_browsers,
    )
    .join(_accounts, _accounts.c.id == _table.c.account_id)
    .where(_table.c.key_hash == bindparam("key_hash"))
)


async def find_record(connection: DbConnection, key_hash: bytes) -> KeyRecord | None:
    """The key with this hash as verification sees it (its account's plan included)."""
    row = (await connection.execute(_RECORD, {"key_hash": key_hash})).first()
    if row is None:
        return None
    key_id, account_id, environment_id, key_type, name, revoked, expires_at, recorded = row[:8]
    return KeyRecord(
        id=key_id,
        account_id=account_id,
        environment_id=environment_id,
        key_type="secret" if key_type == "secret" else "public",
        name=name,
        revoked=revoked,
        expires_at=expires_at,
        expiry_recorded=bool(recorded),
        plan=Plan(row[8], row[9], row[10]),
        scopes=None if row[11] is None else tuple(row[11]),
        restrictions=Restrictions.from_json(row[12]),
        refuse_browsers=bool(row[13]),
    )


class KeyRepository:
    def __init__(self, session: DbSession) -> None:
        self.session = session

    async def get_by_hash(self, key_hash: bytes) -> ApiKey | None:
        result = await self.session.execute(select(ApiKey).where(ApiKey.key_hash == key_hash))
        return result.scalar_one_or_none()

    async def get(
        self, account_id: str | None, key_id: str, *, environment_id: str | None = None
    ) -> ApiKey | None:
        """A key by id, within ``account_id`` (None: any account, for the operator)."""
        if not is_id(key_id, "key"):
            return None
        stmt = select(ApiKey).where(ApiKey.id == key_id)
        if account_id is not None:
            stmt = stmt.where(ApiKey.account_id == account_id)
        if environment_id is not None:
            stmt = stmt.where(ApiKey.environment_id == environment_id)
        result = await self.session.execute(stmt)
        return result.scalar_one_or_none()

    async def reload(self, row: ApiKey) -> ApiKey:
        """``row`` as committed now (the session's copy is overwritten)."""
        result = await self.session.execute(
            select(ApiKey).where(ApiKey.id == row.id).execution_options(populate_existing=True)
        )
        return result.scalar_one()

    async def list(
        self,
        account_id: str,
        *,
        environment_id: str | None = None,
        key_type: str | None = None,
        revoked: bool | None = None,
    ) -> Sequence[Sequence[Any]]:
        """Plain rows, not ORM objects: loading 10,000 keys as ORM instances was
        ~40% of a listing of 200 keys (pyinstrument); the rows carry what the key
        object needs, in _VIEW_COLUMNS' order."""
        if environment_id is not None and not is_id(environment_id, "env"):
            return []
        stmt = _list_statement(environment_id is not None, key_type is not None, revoked)
        params = {"account_id": account_id, "environment_id": environment_id}
        params["key_type"] = key_type
        # Core execution on the session's connection: no ORM loading per row.
        connection = await self.session.connection()
        result = await connection.execute(stmt, params)
        return cast(Sequence[Sequence[Any]], result.all())

    async def ids_not_under_encryption_key(
        self,
        kid: str,
        *,
        after: str | None = None,
        among: Sequence[str] | None = None,
        limit: int,
    ) -> Sequence[str]:
        """Up to ``limit`` ids of keys not encrypted under ``kid``, in order, after
        ``after`` (and among ``among``, if given). No lock.

        Paged by id, so a key left where it is (it cannot be read) is passed
        over, not read again by the next page.
        """
        stmt = select(_table.c.id).where(_table.c.enc_kid != kid)
        if after is not None:
            stmt = stmt.where(_table.c.id > after)
        if among is not None:
            stmt = stmt.where(_table.c.id.in_(among))
        stmt = stmt.order_by(_table.c.id).limit(limit)
        return (await self.session.execute(stmt)).scalars().all()

    async def lock_not_under_encryption_key(
        self, kid: str, ids: Sequence[str]
    ) -> Sequence[Sequence[Any]]:
        """Those of ``ids`` still not under ``kid``, locked, skipping rows another
        transaction holds: (id, account_id, enc_kid, key_ciphertext, key_hash).

        ``FOR NO KEY UPDATE SKIP LOCKED`` (PostgreSQL; SQLite's write
        transaction is the whole database's lock already): every lock is taken
        here, by one statement that never waits, so a transaction that then
        holds many key rows never waits for another's. Updating them in id
        order instead deadlocked with revokes and renames running at the same
        time (tests/keys/test_rotation.py, "deadlock detected"). The weaker
        NO KEY lock is what an UPDATE of non-key columns takes, so audit
        events inserted for these keys (a foreign key check) do not wait on it.
        """
        stmt = (
            select(
                _table.c.id,
                _table.c.account_id,
                _table.c.enc_kid,
                _table.c.key_ciphertext,
                _table.c.key_hash,
            )
            .where(_table.c.id.in_(ids), _table.c.enc_kid != kid)
            .order_by(_table.c.id)
            .with_for_update(skip_locked=True, key_share=True)
        )
        return cast(Sequence[Sequence[Any]], (await self.session.execute(stmt)).all())

    async def set_ciphertext(
        self, key_id: str, *, from_kid: str, kid: str, ciphertext: bytes
    ) -> bool:
        """Store a key's new ciphertext under ``kid``; False if it was not under ``from_kid``.

        Only these two columns change: a revoke or a rename of the same key
        at the same time loses nothing.
        """
        stmt = (
            _table.update()
            .where(_table.c.id == key_id, _table.c.enc_kid == from_kid)
            .values(key_ciphertext=ciphertext, enc_kid=kid)
        )
        result = await self.session.execute(stmt)
        return bool(getattr(result, "rowcount", 0) == 1)

    async def count_active(self, account_id: str, *, at: datetime) -> int:
        """Keys in force at ``at``: not revoked and not expired (what maxKeys limits)."""
        stmt = select(func.count()).where(
            ApiKey.account_id == account_id,
            ApiKey.revoked.is_(False),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > at),
        )
        return int((await self.session.execute(stmt)).scalar_one())

    async def count_active_account_secrets(
        self, account_id: str, *, active_after: datetime, excluding: str
    ) -> int:
        """Account-wide secret keys that are not revoked and live past ``active_after``."""
        stmt = select(func.count()).where(
            ApiKey.account_id == account_id,
            ApiKey.key_type == "secret",
            ApiKey.environment_id.is_(None),
            ApiKey.revoked.is_(False),
            or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > active_after),
            ApiKey.id != excluding,
        )
        return int((await self.session.execute(stmt)).scalar_one())

    def add(self, key: ApiKey) -> None:
        self.session.add(key)

    async def insert(self, key: ApiKey) -> bool:
        """Add ``key`` and write it now; False if a key with its hash is stored already.

        The unique index on ``key_hash`` decides, not a look-up before: two
        imports of one key at once both found no row, and the second insert
        was a 500 (PostgreSQL, two processes). After False the transaction
        is spoilt: the caller raises, and the request rolls back.
        """
        self.session.add(key)
        try:
            await self.session.flush()
        except IntegrityError as exc:
            if not is_conflict(exc):
                raise
            return False
        return True

    async def flush(self) -> None:
        await self.session.flush()
