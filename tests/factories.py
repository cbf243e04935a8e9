"""Factories: rows made through the real services, committed like a request.

``insert_key`` and ``bare_account`` are the exception: rows written as given
(a chosen ``created_at``, no first key), for tests of the repositories'
statements.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import anyio
import httpx
import pytest
from sqlalchemy import select

from keyhouse import errors
from keyhouse.accounts.schemas import LimitsUpdate
from keyhouse.accounts.service import AccountService
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.db.notify import ChangeListener
from keyhouse.db.session import DbSession
from keyhouse.environments.service import EnvironmentService
from keyhouse.ids import new_id
from keyhouse.keys.format import BODY_LEN, KeyType
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import Account, ApiKey, Environment, Event
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow

ModelT = TypeVar("ModelT")
ErrorT = TypeVar("ErrorT", bound=errors.KeyhouseError)


@dataclass(frozen=True)
class AccountWithKey:
    account_id: str
    key_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


def settings_env(settings: Settings) -> dict[str, str]:
    """The ``KEYHOUSE_*`` variables that point a subprocess (``serve``, the CLI) at
    the keyhouse of ``settings``: its data directory, database and secrets."""
    env = {"KEYHOUSE_DATA_DIR": str(settings.data_dir)}
    if settings.database_url:
        env["KEYHOUSE_DATABASE_URL"] = settings.database_url
    if settings.encryption_keys:
        env["KEYHOUSE_ENCRYPTION_KEYS"] = settings.encryption_keys.get_secret_value()
    if settings.admin_tokens:
        env["KEYHOUSE_ADMIN_TOKENS"] = settings.admin_tokens.get_secret_value()
    return env


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def create_account(runtime: Runtime, name: str = "Acme") -> AccountWithKey:
    async with runtime.db.session(write=True) as session:
        new = await AccountService(session, runtime).create(name, actor=CLI)
    return AccountWithKey(new.account.id, new.key.row.id, new.key.plaintext)


async def create_environment(runtime: Runtime, account_id: str, name: str) -> Environment:
    async with runtime.db.session(write=True) as session:
        return await EnvironmentService(session).create(account_id, name, actor=CLI)


async def create_key(
    runtime: Runtime,
    account_id: str,
    *,
    key_type: KeyType = "secret",
    name: str = "test key",
    environment_id: str | None = None,
    expires_at: datetime | None = None,
) -> IssuedKey:
    async with runtime.db.session(write=True) as session:
        return await KeyService(session, runtime).create(
            account_id,
            name=name,
            key_type=key_type,
            environment_id=environment_id,
            expires_at=expires_at,
            actor=CLI,
        )


async def set_limits(runtime: Runtime, account_id: str, **limits: Any) -> None:
    """Change an account's plan (``maxKeys=3``, ...) as the operator does."""
    async with runtime.db.session(write=True) as session:
        await AccountService(session, runtime).update(
            account_id, limits=LimitsUpdate(**limits), actor=CLI
        )


async def set_expiry(runtime: Runtime, key_id: str, when: datetime) -> None:
    """Move a key's expiry (into the past, usually) without waiting for the clock.

    The row is changed behind the services' back, so the in-process cache is
    cleared as the services do for their own changes.
    """
    async with runtime.db.session(write=True) as session:
        row = await session.get(ApiKey, key_id)
        assert row is not None
        row.expires_at = when
    runtime.cache.clear()


def listener(runtime: Runtime) -> ChangeListener:
    """The process's change listener; there is one on PostgreSQL only."""
    assert runtime.change_listener is not None, "no change listener on SQLite"
    return runtime.change_listener


def notification_count(runtime: Runtime) -> int:
    """Key changes this process has heard of (none on SQLite, which has no NOTIFY)."""
    return 0 if runtime.change_listener is None else runtime.change_listener.notifications


async def notified(runtime: Runtime, before: int, count: int = 1) -> None:
    """On PostgreSQL, wait until this process has heard ``count`` key changes since ``before``.

    A change's NOTIFY reaches the process's listener a moment after the commit
    and drops the key from the cache; a test that counts cache hits waits for
    it first. On SQLite there is nothing to wait for.
    """
    if runtime.db.is_sqlite:
        return
    for _ in range(500):
        if listener(runtime).notifications >= before + count:
            return
        await anyio.sleep(0.01)
    raise AssertionError("the key change's NOTIFY did not arrive within 5 s")


def mask(key: str) -> str:
    return f"{key[:3]}…{key[-4:]}" if len(key) > 8 else "…"


def expect_same_key(actual: object, expected: str) -> None:
    """Fail with masked keys only: a test's output never shows a full key.

    Call it as a statement, not inside ``assert`` (pytest would print the
    arguments).
    """
    __tracebackhide__ = True  # pytest would print this frame's arguments: the keys
    if actual != expected:
        shown = mask(actual) if isinstance(actual, str) else type(actual).__name__
        raise AssertionError(f"key mismatch: got {shown}, expected {mask(expected)}")


def expect_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The seed's envelope with ``status`` and ``code``; returns the body.

    Optional members are omitted (never null), the tracking id matches the
    header, and a 401 says how to authenticate. Failure messages hold no body
    text (a body never holds a key, but a bug could make one).
    """
    __tracebackhide__ = True
    assert response.status_code == status, f"status {response.status_code}, expected {status}"
    body: dict[str, Any] = response.json()
    assert set(body) == {"trackingId", "error"}
    assert body["trackingId"] == response.headers["x-tracking-id"]
    error = body["error"]
    assert error["code"] == code, f"code {error['code']!r}, expected {code!r}"
    assert isinstance(error["message"], str)
    assert error["message"]
    assert set(error) <= {"code", "message", "fix", "provider", "providerCode"}
    assert None not in error.values()
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")
    return body


@contextmanager
def raises(error: type[ErrorT], code: str) -> Iterator[pytest.ExceptionInfo[ErrorT]]:
    """Expect exactly ``error`` (not a subclass of it) carrying ``code``.

    The class is what the CLI and the error handler see, the code what a
    client sees; both are part of a service's contract.
    """
    __tracebackhide__ = True
    with pytest.raises(error) as caught:
        yield caught
    raised = type(caught.value)
    assert raised is error, f"raised {raised.__name__}, expected {error.__name__}"
    assert caught.value.code == code, f"code {caught.value.code!r}, expected {code!r}"


class RolledBack(Exception):
    """Raised at the end of a ``rolled_back`` block to undo its transaction."""


@asynccontextmanager
async def rolled_back(runtime: Runtime) -> AsyncIterator[DbSession]:
    """A write session whose transaction is rolled back when the block ends.

    What a request does when its handler fails after a service call: what
    the services did in the session must then leave no trace.
    """
    try:
        async with runtime.db.session(write=True) as session:
            yield session
            raise RolledBack
    except RolledBack:
        pass


async def committed(runtime: Runtime, model: type[ModelT], ident: Any) -> ModelT | None:
    """The row as another session sees it: only what was committed."""
    async with runtime.db.session(write=False) as session:
        row: ModelT | None = await session.get(model, ident)
        return row


async def committed_events(runtime: Runtime, account_id: str) -> list[Event]:
    """The account's committed audit events, oldest first."""
    async with runtime.db.session(write=False) as session:
        result = await session.scalars(
            select(Event).where(Event.account_id == account_id).order_by(Event.id)
        )
        return list(result.all())


async def bare_account(runtime: Runtime, **limits: Any) -> str:
    """An account row with the given plan columns and nothing else (no key, no event)."""
    account_id, created_at = new_id("acc")
    async with runtime.db.session(write=True) as session:
        session.add(Account(id=account_id, name="Bare", created_at=created_at, **limits))
    return account_id


def insert_key(
    session: DbSession,
    account_id: str,
    *,
    key_type: KeyType = "secret",
    environment_id: str | None = None,
    revoked: bool = False,
    expires_at: datetime | None = None,
    created_at: datetime | None = None,
    key_id: str | None = None,
) -> ApiKey:
    """A key row as given, added to ``session`` (not flushed).

    Its hash is of the id and its ciphertext is not one: repository
    statements never read either for meaning, and no key string exists.
    """
    new_key_id, made_at = new_id("key")
    key_id = key_id or new_key_id
    row = ApiKey(
        id=key_id,
        account_id=account_id,
        environment_id=environment_id,
        key_type=key_type,
        name="inserted",
        key_hash=hashlib.sha256(key_id.encode()).digest(),
        key_ciphertext=b"not a ciphertext",
        enc_kid="none",
        key_hint="sk_…none",
        revoked=revoked,
        revoked_at=utcnow() if revoked else None,
        expires_at=expires_at,
        created_at=created_at or made_at,
        imported=False,
    )
    session.add(row)
    return row


def key_regex(prefix: str) -> str:
    """The regular expression a secret scanner can use for keys with ``prefix``."""
    return rf"\b{re.escape(prefix)}[0-9A-Za-z]{{{BODY_LEN}}}\b"
