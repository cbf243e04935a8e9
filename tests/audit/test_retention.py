"""The audit log's retention (issue 13, item 6): ``KEYHOUSE_EVENTS_RETENTION_DAYS``.

Events older than the retention go, in batches, from a loop every serving
process runs (``Runtime.start``); newer ones stay. Several processes prune
at once without error or double counting. Both engines; real ``serve``
processes on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from keyhouse.app import create_app
from keyhouse.audit.retention import prune_events
from keyhouse.audit.service import CLI, AuditService
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.db.session import DbSession
from keyhouse.ids import _encode_ulid, id_floor, new_id
from keyhouse.models import Account, Event
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import bare_account
from tests.limits.conftest import served


async def add_events(db: Database, account_id: str, at: datetime, count: int) -> list[str]:
    """``count`` events created at ``at``, as AuditService writes them (ids carry the time)."""
    ms = _ms(at)
    created = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    ids = []
    async with db.session(write=True) as session:
        for _ in range(count):
            # new_ulid never goes back in time (it keeps ids sorted): the id by hand.
            event_id = f"evt_{_encode_ulid(ms, secrets.randbits(80))}"
            session.add(
                Event(
                    id=event_id,
                    account_id=account_id,
                    type="key.created",
                    actor_type="cli",
                    created_at=created,
                )
            )
            ids.append(event_id)
    return ids


async def event_ids(db: Database) -> set[str]:
    async with db.session(write=False) as session:
        return set((await session.scalars(select(Event.id))).all())


async def test_old_events_go_and_new_ones_stay(runtime: Runtime) -> None:
    account = await bare_account(runtime)
    now = utcnow()
    old = await add_events(runtime.db, account, now - timedelta(days=31), 25)
    edge = await add_events(runtime.db, account, now - timedelta(days=29, hours=23), 3)
    async with runtime.db.session(write=True) as session:
        AuditService(session).record("account.updated", account_id=account, actor=CLI)
    before = await event_ids(runtime.db)
    assert set(old) <= before

    deleted = await prune_events(runtime.db, now - timedelta(days=30), batch=7)
    assert deleted == 25
    after = await event_ids(runtime.db)
    assert after == before - set(old)
    assert set(edge) <= after
    # Again: nothing left to delete.
    assert await prune_events(runtime.db, now - timedelta(days=30), batch=7) == 0


@pytest.mark.postgresql_only
async def test_two_processes_prune_at_once(settings: Settings, runtime: Runtime) -> None:
    account = await bare_account(runtime)
    old = await add_events(runtime.db, account, utcnow() - timedelta(days=40), 60)
    other = Database(settings)  # another process's engine and pool
    try:
        cutoff = utcnow() - timedelta(days=30)
        counts = await asyncio.gather(
            prune_events(runtime.db, cutoff, batch=5), prune_events(other, cutoff, batch=5)
        )
    finally:
        await other.dispose()
    assert sum(counts) == len(old)
    assert not set(old) & await event_ids(runtime.db)


def _ms(when: datetime) -> int:
    return (when - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_id_floor_orders_as_created_at() -> None:
    when = datetime(2026, 11, 30, 12, 0, 0, 500_000, tzinfo=UTC)
    top = 2**80 - 1
    before = f"evt_{_encode_ulid(_ms(when) - 1, top)}"
    at = f"evt_{_encode_ulid(_ms(when), 0)}"
    assert before < id_floor("evt", when) <= at
    # And ids made now sort above a floor of a second ago, below one a second ahead.
    event_id, created = new_id("evt")
    assert id_floor("evt", created - timedelta(seconds=1)) < event_id
    assert event_id < id_floor("evt", created + timedelta(seconds=1))


async def test_the_serving_loop_prunes_at_start(make_settings: Callable[..., Settings]) -> None:
    app: FastAPI = create_app(make_settings(events_retention_days=30))
    prepared = create_app(make_settings())
    async with prepared.router.lifespan_context(prepared):
        db = prepared.state.runtime.db
        account = await bare_account(prepared.state.runtime)
        old = await add_events(db, account, utcnow() - timedelta(days=31), 10)
        new = await add_events(db, account, utcnow() - timedelta(days=1), 2)
    async with app.router.lifespan_context(app):
        db = app.state.runtime.db
        deadline = time.monotonic() + 20
        while set(old) & await event_ids(db):
            assert time.monotonic() < deadline, "the retention loop did not prune within 20 s"
            await asyncio.sleep(0.05)
        assert set(new) <= await event_ids(db)


@pytest.mark.postgresql_only
def test_two_serve_processes_prune_and_keep_serving(settings: Settings) -> None:
    """Real serve processes with a retention: old events go while requests write new ones."""

    async def prepare() -> list[str]:
        db = Database(settings)
        try:
            async with db.session(write=True) as session:
                account_id = await _account(session)
            return await add_events(db, account_id, utcnow() - timedelta(days=400), 2500)
        finally:
            await db.dispose()

    async def remaining(ids: list[str]) -> int:
        db = Database(settings)
        try:
            async with db.session(write=False) as session:
                count = await session.scalar(
                    select(func.count()).select_from(Event).where(Event.id.in_(ids))
                )
                return int(count or 0)
        finally:
            await db.dispose()

    old = asyncio.run(prepare())
    with served(settings, 2, KEYHOUSE_EVENTS_RETENTION_DAYS="365") as _:
        deadline = time.monotonic() + 60
        while asyncio.run(remaining(old)):
            assert time.monotonic() < deadline, "old events still there after 60 s"
            time.sleep(0.1)


async def _account(session: DbSession) -> str:
    account_id, created_at = new_id("acc")
    session.add(Account(id=account_id, name="Retained", created_at=created_at))
    return account_id
