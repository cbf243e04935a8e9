"""A read session is a real session: what a write session does works in it too.

On both engines a read session (``Database.session(write=False)``, what a
GET request gets) takes writes: they commit with the session, roll back with
it, and the session's own queries see them. On SQLite the read session runs
its reads inline; its first write waits for SQLite's write lock in a worker
thread, so the event loop keeps serving meanwhile.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from keyhouse.audit.service import CLI, AuditService
from keyhouse.ids import new_id
from keyhouse.models import Environment, Event
from keyhouse.runtime import Runtime
from tests.factories import create_account


class Boom(Exception):
    pass


async def events_of(runtime: Runtime, account_id: str, type_: str) -> list[Event]:
    async with runtime.db.session(write=False) as session:
        rows = await session.scalars(
            select(Event).where(Event.account_id == account_id, Event.type == type_)
        )
        return list(rows.all())


async def test_an_audit_event_recorded_in_a_read_session_is_committed(runtime: Runtime) -> None:
    account = await create_account(runtime)
    async with runtime.db.session(write=False) as session:
        # A read first: on SQLite the session starts inline, in autocommit.
        assert await session.get(Event, "evt_none") is None
        event = AuditService(session).record(
            "account.updated", account_id=account.account_id, actor=CLI
        )

    assert [e.id for e in await events_of(runtime, account.account_id, "account.updated")] == [
        event.id
    ]


async def test_a_read_session_sees_its_own_flushed_rows(runtime: Runtime) -> None:
    account = await create_account(runtime)
    env_id, created_at = new_id("env")
    async with runtime.db.session(write=False) as session:
        session.add(
            Environment(id=env_id, account_id=account.account_id, name="x", created_at=created_at)
        )
        await session.flush()
        count = await session.scalar(
            select(func.count()).where(Environment.account_id == account.account_id)
        )
        # And after the write, reads go on in the same transaction.
        found = await session.get(Environment, env_id)
    assert count == 1
    assert found is not None
    assert found.name == "x"


async def test_a_failed_read_session_rolls_its_writes_back(runtime: Runtime) -> None:
    account = await create_account(runtime)

    async def record_then_fail() -> None:
        async with runtime.db.session(write=False) as session:
            AuditService(session).record(
                "account.updated", account_id=account.account_id, actor=CLI
            )
            await session.flush()
            raise Boom

    with pytest.raises(Boom):
        await record_then_fail()
    assert await events_of(runtime, account.account_id, "account.updated") == []


@pytest.mark.sqlite_only
async def test_a_read_session_waits_for_the_write_lock_off_the_event_loop(
    runtime: Runtime,
) -> None:
    account = await create_account(runtime)

    async def write_in_a_read_session() -> None:
        async with runtime.db.session(write=False) as session:
            AuditService(session).record(
                "account.updated", account_id=account.account_id, actor=CLI, data={"by": "read"}
            )
            await session.flush()

    async with runtime.db.session(write=True) as writer:
        AuditService(writer).record(
            "account.updated", account_id=account.account_id, actor=CLI, data={"by": "write"}
        )
        await writer.flush()  # the writer now holds SQLite's write lock
        waiting = asyncio.create_task(write_in_a_read_session())
        # Had the read session waited for the lock on the event loop's thread,
        # the loop would stand still until the busy timeout (5 s) and the task
        # would then be done, with "database is locked".
        done, _ = await asyncio.wait({waiting}, timeout=0.3)
        assert not done
    await asyncio.wait_for(waiting, 10)  # the writer committed: the lock is free

    events = await events_of(runtime, account.account_id, "account.updated")
    assert sorted((e.data or {})["by"] for e in events) == ["read", "write"]
