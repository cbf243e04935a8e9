"""AuditService called directly: recording in the caller's transaction, and paging.

The HTTP tests (test_endpoints) pin which changes are recorded and the
``GET /events`` pages; these pin what ``record`` stores from an actor, that
it neither flushes nor commits (the change's own transaction carries it),
and ``list``'s pages, cursor and scope as the service returns them.
"""

from __future__ import annotations

from keyhouse.audit.service import CLI, MAX_PAGE, Actor, AuditService
from keyhouse.models import Event
from keyhouse.runtime import Runtime
from tests.factories import (
    bare_account,
    committed,
    committed_events,
    create_environment,
    rolled_back,
)


async def record_events(
    runtime: Runtime, account_id: str, environments: list[str | None]
) -> list[str]:
    """One event per entry (its environment), in one transaction; their ids, oldest first."""
    async with runtime.db.session(write=True) as session:
        audit = AuditService(session)
        return [
            audit.record("key.created", account_id=account_id, actor=CLI, environment_id=env).id
            for env in environments
        ]


class TestRecord:
    async def test_stores_the_actor_and_details(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        actor = Actor("key", "key_01HZZZZZZZZZZZZZZZZZZZZZZZ", "203.0.113.9", "u" * 600)
        async with runtime.db.session(write=True) as session:
            event = AuditService(session).record(
                "key.rolled",
                account_id=account_id,
                actor=actor,
                key_id="key_01HZZZZZZZZZZZZZZZZZZZZZZY",
                data={"rolledTo": "key_01HZZZZZZZZZZZZZZZZZZZZZZX", "n": [1, 2]},
            )
            event_id = event.id
        row = await committed(runtime, Event, event_id)
        assert row is not None
        assert (row.type, row.actor_type, row.actor_id, row.ip) == (
            "key.rolled",
            "key",
            actor.id,
            "203.0.113.9",
        )
        # Cut to the column's size rather than failing the change it records.
        assert row.user_agent == "u" * 512
        assert row.data == {"rolledTo": "key_01HZZZZZZZZZZZZZZZZZZZZZZX", "n": [1, 2]}
        assert row.environment_id is None

    async def test_an_empty_user_agent_is_stored_as_none(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        async with runtime.db.session(write=True) as session:
            event_id = (
                AuditService(session)
                .record(
                    "account.updated", account_id=account_id, actor=Actor("admin", None, None, "")
                )
                .id
            )
        row = await committed(runtime, Event, event_id)
        assert row is not None
        assert (row.actor_id, row.ip, row.user_agent, row.data) == (None, None, None, None)

    async def test_written_by_the_callers_transaction_only(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        async with rolled_back(runtime) as session:
            AuditService(session).record("account.updated", account_id=account_id, actor=CLI)
        assert await committed_events(runtime, account_id) == []
        async with runtime.db.session(write=True) as session:
            AuditService(session).record("account.updated", account_id=account_id, actor=CLI)
            # Not flushed by record: the change's commit writes it.
            assert await committed_events(runtime, account_id) == []
        assert [e.type for e in await committed_events(runtime, account_id)] == ["account.updated"]


class TestList:
    async def test_pages_newest_first_with_cursor_and_has_more(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        ids = await record_events(runtime, account_id, [None] * 5)
        newest_first = ids[::-1]
        async with runtime.db.session(write=False) as session:
            audit = AuditService(session)
            pages: list[tuple[list[str], bool]] = []
            cursor = None
            while True:
                rows, has_more = await audit.list(account_id, limit=2, starting_after=cursor)
                pages.append(([r.id for r in rows], has_more))
                if not has_more:
                    break
                cursor = rows[-1].id
            assert pages == [
                (newest_first[0:2], True),
                (newest_first[2:4], True),
                (newest_first[4:], False),
            ]
            # Exactly a page: nothing more. After the oldest: an empty page.
            assert [r.id for r in (await audit.list(account_id, limit=5))[0]] == newest_first
            assert (await audit.list(account_id, limit=5))[1] is False
            assert await audit.list(account_id, starting_after=ids[0]) == ([], False)

    async def test_scoped_to_an_environment_and_an_account(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        prod = (await create_environment(runtime, account_id, "production")).id
        staging = (await create_environment(runtime, account_id, "staging")).id
        ids = await record_events(runtime, account_id, [prod, None, staging, prod, prod])
        theirs = await record_events(runtime, other_id, [None])
        async with runtime.db.session(write=False) as session:
            audit = AuditService(session)
            rows, has_more = await audit.list(account_id, limit=2, scope_environment_id=prod)
            assert ([r.id for r in rows], has_more) == ([ids[4], ids[3]], True)
            rows, has_more = await audit.list(
                account_id, limit=2, starting_after=ids[3], scope_environment_id=prod
            )
            # The environment's own environment.created is in its scope too.
            page = [(r.id if r.type == "key.created" else r.type, r.environment_id) for r in rows]
            assert (page, has_more) == ([(ids[0], prod), ("environment.created", prod)], False)
            # Another account's event id as a cursor: a bound, never its events.
            rows, _ = await audit.list(account_id, limit=100, starting_after=theirs[0])
            assert {r.account_id for r in rows} == {account_id}

    async def test_a_limit_above_the_maximum_gives_a_full_page_and_more(
        self, runtime: Runtime
    ) -> None:
        account_id = await bare_account(runtime)
        await record_events(runtime, account_id, [None] * (MAX_PAGE + 2))
        async with runtime.db.session(write=False) as session:
            rows, has_more = await AuditService(session).list(account_id, limit=MAX_PAGE + 50)
        assert (len(rows), has_more) == (MAX_PAGE, True)
