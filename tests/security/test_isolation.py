"""Cross-account and cross-environment authorization, as a stateful test.

Two accounts with two environments each, and callers of every scope: an
account-wide secret key, environment-scoped secret keys, public keys. Hypothesis
makes random sequences of operations where a caller reaches for the ids of
objects on "the other side" (the other account; for an environment-scoped
key, also the rest of its own account): each such probe is refused (404, or
403 for a public key, or 403 for an environment-scoped key creating outside
its environment, as for an id that does not exist), a listing shows nothing
of the other side, and no row of the other side changes (api_keys,
environments, events). Legitimate operations on a caller's own side run in
between, so the other side's set of objects keeps changing.

The app runs in-process on an event loop of its own (an anyio blocking
portal), which the synchronous state machine calls into. Bounded to a few
seconds per backend; ``KEYHOUSE_STATEFUL_EXAMPLES`` raises the number of
examples for long runs.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import anyio.from_thread
import httpx
from fastapi import FastAPI
from hypothesis import HealthCheck
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import select

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.ids import new_id
from keyhouse.keys.format import KeyType
from keyhouse.models import ApiKey, Environment, Event
from keyhouse.runtime import Runtime
from tests.factories import create_account, create_environment, create_key, listener

EXAMPLES = int(os.environ.get("KEYHOUSE_STATEFUL_EXAMPLES", "30"))
STEPS = int(os.environ.get("KEYHOUSE_STATEFUL_STEPS", "15"))

KEY_TYPES: list[KeyType] = ["secret", "public"]
# Everything of a key row but lastUsedAt (written behind, for the caller's own key).
KEY_COLUMNS = [c for c in ApiKey.__table__.columns if c.name != "last_used_at"]


@dataclass(frozen=True)
class Caller:
    """One key that calls. Rules draw callers by label: hypothesis prints what is drawn."""

    label: str
    key: str
    key_id: str
    account_id: str
    environment_id: str | None  # None: account-wide
    secret: bool

    def owns(self, account_id: str, environment_id: str | None) -> bool:
        """Whether a row of this account and environment is on the caller's side."""
        if account_id != self.account_id:
            return False
        return self.environment_id is None or environment_id == self.environment_id


@dataclass
class World:
    account_ids: list[str]
    # environment id -> account id
    environments: dict[str, str]
    # key id -> (account id, environment id)
    keys: dict[str, tuple[str, str | None]]
    callers: list[Caller]
    counter: int = 0


@dataclass(frozen=True)
class Snapshot:
    keys: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    environments: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    # event id -> (account id, environment id)
    events: dict[str, tuple[str, str | None]] = field(default_factory=dict)

    def other_side(self, caller: Caller) -> Snapshot:
        """The rows the caller must neither see nor change."""
        keys = {k: r for k, r in self.keys.items() if not caller.owns(r[1], r[2])}
        envs = {
            e: r
            for e, r in self.environments.items()
            if r[1] != caller.account_id or caller.environment_id not in (None, e)
        }
        events = {e: r for e, r in self.events.items() if not caller.owns(*r)}
        return Snapshot(keys, envs, events)

    def own_side(self, caller: Caller) -> Snapshot:
        keys = {k: r for k, r in self.keys.items() if caller.owns(r[1], r[2])}
        envs = {
            e: r
            for e, r in self.environments.items()
            if r[1] == caller.account_id and caller.environment_id in (None, e)
        }
        events = {e: r for e, r in self.events.items() if caller.owns(*r)}
        return Snapshot(keys, envs, events)


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    """What changed, by table and id only (never a row's content)."""
    out = []
    for table in ("keys", "environments", "events"):
        old, new = getattr(before, table), getattr(after, table)
        out += [f"{table} {i}" for i in sorted(set(old) | set(new)) if old.get(i) != new.get(i)]
    return out


async def build_world(runtime: Runtime, example: int) -> World:
    world = World([], {}, {}, [])
    for side in ("a", "b"):
        acc = await create_account(runtime, f"{side}{example}")
        world.account_ids.append(acc.account_id)
        world.keys[acc.key_id] = (acc.account_id, None)
        world.callers.append(
            Caller(f"{side}: account-wide secret", acc.key, acc.key_id, acc.account_id, None, True)
        )
        for n in range(2):
            env = await create_environment(runtime, acc.account_id, f"env{n}")
            world.environments[env.id] = acc.account_id
            for key_type in KEY_TYPES:
                issued = await create_key(
                    runtime, acc.account_id, key_type=key_type, environment_id=env.id
                )
                world.keys[issued.row.id] = (acc.account_id, env.id)
                world.callers.append(
                    Caller(
                        f"{side}: env{n} {key_type}",
                        issued.plaintext,
                        issued.row.id,
                        acc.account_id,
                        env.id,
                        key_type == "secret",
                    )
                )
        for key_type in KEY_TYPES:
            issued = await create_key(runtime, acc.account_id, key_type=key_type, name="target")
            world.keys[issued.row.id] = (acc.account_id, None)
            if key_type == "public":
                world.callers.append(
                    Caller(
                        f"{side}: account-wide public",
                        issued.plaintext,
                        issued.row.id,
                        acc.account_id,
                        None,
                        False,
                    )
                )
    return world


async def take_snapshot(runtime: Runtime, account_ids: list[str]) -> Snapshot:
    async with runtime.db.session(write=False) as session:
        keys = (
            await session.execute(select(*KEY_COLUMNS).where(ApiKey.account_id.in_(account_ids)))
        ).all()
        envs = (
            await session.execute(
                select(Environment.id, Environment.account_id, Environment.name).where(
                    Environment.account_id.in_(account_ids)
                )
            )
        ).all()
        events = (
            await session.execute(
                select(Event.id, Event.account_id, Event.environment_id).where(
                    Event.account_id.in_(account_ids)
                )
            )
        ).all()
    return Snapshot(
        {row[0]: tuple(row) for row in keys},
        {row[0]: tuple(row) for row in envs},
        {row[0]: (str(row[1]), row[2]) for row in events},  # account_id IN (...): never NULL
    )


def make_machine(
    portal: anyio.from_thread.BlockingPortal, client: httpx.AsyncClient, runtime: Runtime
) -> type[RuleBasedStateMachine]:
    examples = iter(range(1_000_000))

    class Isolation(RuleBasedStateMachine):
        world: World

        @initialize()
        def setup(self) -> None:
            self.world = portal.call(build_world, runtime, next(examples))

        # -- helpers ------------------------------------------------------------

        def request(
            self, caller: Caller, method: str, url: str, body: Any = None
        ) -> httpx.Response:
            headers = {"Authorization": f"Bearer {caller.key}"}
            call = partial(client.request, method, url, headers=headers, json=body)
            response: httpx.Response = portal.call(call)
            return response

        def snapshot(self) -> Snapshot:
            result: Snapshot = portal.call(take_snapshot, runtime, self.world.account_ids)
            return result

        def probe(
            self, caller: Caller, method: str, url: str, body: Any, status: int, code: str
        ) -> httpx.Response:
            """A request that must be refused and leave the other side as it was."""
            before = self.snapshot()
            response = self.request(caller, method, url, body)
            after = self.snapshot()
            error = response.json().get("error") if response.status_code >= 400 else None
            got = (response.status_code, error["code"] if error else None)
            assert got == (status, code), f"{caller.label}: {method} {url} -> {got}"
            changed = differences(before.other_side(caller), after.other_side(caller))
            assert changed == [], f"{caller.label}: {method} {url} changed the other side"
            return response

        def draw_caller(self, data: st.DataObject, *, secret_only: bool = False) -> Caller:
            by_label = {c.label: c for c in self.world.callers if c.secret or not secret_only}
            return by_label[data.draw(st.sampled_from(sorted(by_label)), label="caller")]

        def refusal(self, caller: Caller) -> tuple[int, str]:
            if not caller.secret:
                return 403, "insufficient_permissions"
            return 404, "not_found"

        def foreign_keys(self, caller: Caller) -> list[str]:
            return sorted(k for k, where in self.world.keys.items() if not caller.owns(*where))

        def foreign_envs(self, caller: Caller) -> list[str]:
            return sorted(
                e
                for e, acc in self.world.environments.items()
                if acc != caller.account_id or caller.environment_id not in (None, e)
            )

        # -- probes of the other side ----------------------------------------------

        @rule(data=st.data(), op=st.sampled_from(["get", "rename", "revoke", "force", "roll"]))
        def key_of_the_other_side(self, data: st.DataObject, op: str) -> None:
            caller = self.draw_caller(data)
            key_id = data.draw(st.sampled_from(self.foreign_keys(caller)), label="key")
            method, url, body = {
                "get": ("GET", f"/keys/{key_id}", None),
                "rename": ("PATCH", f"/keys/{key_id}", {"name": "taken over"}),
                "revoke": ("POST", f"/keys/{key_id}/revoke", None),
                "force": ("POST", f"/keys/{key_id}/revoke?force=true", None),
                "roll": ("POST", f"/keys/{key_id}/roll", {"expiresInSeconds": 0}),
            }[op]
            self.probe(caller, method, url, body, *self.refusal(caller))

        @rule(data=st.data())
        def list_keys_of_another_environment(self, data: st.DataObject) -> None:
            caller = self.draw_caller(data)
            env_id = data.draw(st.sampled_from(self.foreign_envs(caller)), label="environment")
            url = f"/keys?environmentId={env_id}"
            if not caller.secret:
                self.probe(caller, "GET", url, None, 403, "insufficient_permissions")
                return
            # A filter on an environment the caller cannot see lists nothing, exactly
            # as for an environment that does not exist: no existence oracle.
            response = self.request(caller, "GET", url)
            unknown = self.request(caller, "GET", f"/keys?environmentId={new_id('env')[0]}")
            shown = (response.status_code, response.json())
            assert shown == (200, {"keys": []}), f"{caller.label}: {url} showed keys"
            assert (unknown.status_code, unknown.json()) == shown

        @rule(data=st.data(), key_type=st.sampled_from(["secret", "public"]))
        def create_in_another_environment(self, data: st.DataObject, key_type: str) -> None:
            caller = self.draw_caller(data)
            env_id = data.draw(st.sampled_from(self.foreign_envs(caller)), label="environment")
            status, code = self.refusal(caller)
            if caller.secret and caller.environment_id is not None:
                status, code = 403, "insufficient_permissions"
            before = self.snapshot()
            body = {"name": "planted", "keyType": key_type, "environmentId": env_id}
            self.probe(caller, "POST", "/keys", body, status, code)
            # Refused for an environment that does not exist in the same way.
            body["environmentId"] = new_id("env")[0]
            self.probe(caller, "POST", "/keys", body, status, code)
            after = self.snapshot()
            planted = sorted(set(after.keys) - set(before.keys))
            assert planted == [], f"{caller.label}: a refused create made a key"

        @rule(data=st.data())
        def listings_show_only_the_callers_side(self, data: st.DataObject) -> None:
            caller = self.draw_caller(data)
            path = data.draw(st.sampled_from(["/keys", "/events?limit=100", "/environments"]))
            if not caller.secret:
                self.probe(caller, "GET", path, None, 403, "insufficient_permissions")
                return
            before = self.snapshot()
            response = self.request(caller, "GET", path)
            status = response.status_code
            assert status == 200, f"{caller.label}: GET {path} -> {status}"
            listed = response.json()
            own = before.own_side(caller)
            if path == "/keys":
                ids = {k["id"] for k in listed["keys"]}
                allowed, everything = set(own.keys), set(own.keys)
            elif path == "/environments":
                ids = {e["id"] for e in listed["environments"]}
                allowed, everything = set(own.environments), set(own.environments)
            else:
                ids = {e["id"] for e in listed["events"]}
                allowed = set(own.events)
                everything = allowed if len(allowed) <= 100 else ids
            strays = sorted(ids - allowed)
            assert strays == [], f"{caller.label}: GET {path} listed the other side's {strays}"
            missing = sorted(everything - ids)
            assert missing == [], f"{caller.label}: GET {path} left out its own {missing}"
            after = self.snapshot()
            changed = differences(before.other_side(caller), after.other_side(caller))
            assert changed == [], f"{caller.label}: GET {path} changed the other side"

        # -- the caller's own side moves on ------------------------------------------

        @rule(data=st.data(), op=st.sampled_from(["create", "rename", "roll", "revoke"]))
        def own_side_changes(self, data: st.DataObject, op: str) -> None:
            caller = self.draw_caller(data, secret_only=True)
            own = sorted(
                k
                for k, where in self.world.keys.items()
                if caller.owns(*where) and k not in {c.key_id for c in self.world.callers}
            )
            before = self.snapshot()
            if op == "create" or not own:
                self.world.counter += 1
                body: Any = {"name": f"own {self.world.counter}", "keyType": "secret"}
                response = self.request(caller, "POST", "/keys", body)
                expected = 201
            else:
                key_id = data.draw(st.sampled_from(own), label="own key")
                method, url, body = {
                    "rename": ("PATCH", f"/keys/{key_id}", {"name": "renamed"}),
                    "roll": ("POST", f"/keys/{key_id}/roll", {"expiresInSeconds": 0}),
                    "revoke": ("POST", f"/keys/{key_id}/revoke", None),
                }[op]
                response = self.request(caller, method, url, body)
                expected = 201 if op == "roll" else 200
                if op == "roll" and response.status_code == 409:
                    expected = 409  # rolled already (expired), or revoked: not rollable
            status = response.status_code
            assert status == expected, f"{caller.label}: {op} -> {status}"
            if status == 201:
                self.world.keys[response.json()["id"]] = (
                    caller.account_id,
                    caller.environment_id,
                )
            after = self.snapshot()
            changed = differences(before.other_side(caller), after.other_side(caller))
            assert changed == [], f"{caller.label}: {op} of its own changed the other side"

        @invariant()
        def known_keys_are_all_the_keys(self) -> None:
            # The model keeps up: every key row of the two accounts is one it knows of.
            if not hasattr(self, "world"):
                return
            rows = set(self.snapshot().keys)
            unknown = len(rows - set(self.world.keys))
            assert unknown == 0

    return Isolation


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        if not runtime.db.is_sqlite:
            await listener(runtime).connected.wait()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def test_no_caller_reaches_the_other_side(make_settings: Callable[..., Settings]) -> None:
    # lastUsedAt written behind only at shutdown: no write lands mid-comparison.
    app = create_app(make_settings(last_used_flush_seconds=3600, log_level="warning"))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(serving(app)) as client,
    ):
        machine = make_machine(portal, client, app.state.runtime)
        run_state_machine_as_test(
            machine,
            settings=hsettings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
