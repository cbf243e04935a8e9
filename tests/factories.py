"""Factories: rows made through the real services, committed like a request."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import httpx

from keyhouse.accounts.service import AccountService
from keyhouse.audit.service import CLI
from keyhouse.db.notify import ChangeListener
from keyhouse.environments.service import EnvironmentService
from keyhouse.keys.format import BODY_LEN, KeyType
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import ApiKey, Environment
from keyhouse.runtime import Runtime


@dataclass(frozen=True)
class AccountWithKey:
    account_id: str
    key_id: str
    key: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


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


def key_regex(prefix: str) -> str:
    """The regular expression a secret scanner can use for keys with ``prefix``."""
    return rf"\b{re.escape(prefix)}[0-9A-Za-z]{{{BODY_LEN}}}\b"
