"""EnvironmentService called directly, the way the endpoints and the CLI call it.

The HTTP tests (test_endpoints) pin the responses; these pin the
transaction (an environment and its event commit together), that a refusal
writes nothing even if the caller commits, and the listing's order and scope.
"""

from __future__ import annotations

from datetime import timedelta

from keyhouse import errors
from keyhouse.audit.service import CLI
from keyhouse.environments.service import EnvironmentService
from keyhouse.ids import new_id
from keyhouse.models import Environment
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import (
    bare_account,
    committed,
    committed_events,
    create_environment,
    raises,
    rolled_back,
)


class TestCreate:
    async def test_the_environment_and_its_event_commit_together(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        async with runtime.db.session(write=True) as session:
            env = await EnvironmentService(session).create(account_id, "staging", actor=CLI)
            env_id = env.id
            assert await committed(runtime, Environment, env_id) is None
        stored = await committed(runtime, Environment, env_id)
        assert stored is not None
        assert (stored.account_id, stored.name) == (account_id, "staging")
        events = [
            (e.type, e.environment_id, e.actor_type)
            for e in await committed_events(runtime, account_id)
        ]
        assert events == [("environment.created", env_id, "cli")]

    async def test_rolled_back_leaves_nothing(self, runtime: Runtime) -> None:
        account_id = await bare_account(runtime)
        async with rolled_back(runtime) as session:
            env_id = (await EnvironmentService(session).create(account_id, "qa", actor=CLI)).id
        assert await committed(runtime, Environment, env_id) is None
        assert await committed_events(runtime, account_id) == []

    async def test_refusals_write_nothing_even_if_the_caller_commits(
        self, runtime: Runtime
    ) -> None:
        account_id = await bare_account(runtime)
        existing = await create_environment(runtime, account_id, "production")
        before = [e.id for e in await committed_events(runtime, account_id)]
        async with runtime.db.session(write=True) as session:
            service = EnvironmentService(session)
            with raises(errors.Forbidden, "insufficient_permissions"):
                await service.create(account_id, "qa", caller_environment_id=existing.id, actor=CLI)
            with raises(errors.Conflict, "conflict"):
                await service.create(account_id, "production", actor=CLI)
        async with runtime.db.session(write=False) as session:
            listed = await EnvironmentService(session).list(account_id)
        assert [e.id for e in listed] == [existing.id]
        assert [e.id for e in await committed_events(runtime, account_id)] == before

    async def test_names_are_unique_per_account_only(self, runtime: Runtime) -> None:
        first, second = await bare_account(runtime), await bare_account(runtime)
        a = await create_environment(runtime, first, "production")
        b = await create_environment(runtime, second, "production")
        assert a.id != b.id


class TestList:
    async def test_newest_first_ties_by_id_and_scope(self, runtime: Runtime) -> None:
        account_id, other_id = await bare_account(runtime), await bare_account(runtime)
        now = utcnow().replace(microsecond=0)
        ids = [new_id("env")[0] for _ in range(3)]
        created = [now + timedelta(milliseconds=1), now, now]
        async with runtime.db.session(write=True) as session:
            for i, (env_id, at) in enumerate(zip(ids, created, strict=True)):
                session.add(
                    Environment(id=env_id, account_id=account_id, name=f"e{i}", created_at=at)
                )
        theirs = await create_environment(runtime, other_id, "e0")
        async with runtime.db.session(write=False) as session:
            service = EnvironmentService(session)
            assert [e.id for e in await service.list(account_id)] == [ids[0], ids[2], ids[1]]
            scoped = await service.list(account_id, scope_environment_id=ids[1])
            assert [e.id for e in scoped] == [ids[1]]
            # Another account's environment as the scope shows nothing of it.
            assert await service.list(account_id, scope_environment_id=theirs.id) == []
