"""KeyService called directly, the way the endpoints, the fast path and the CLI call it.

The HTTP tests (test_endpoints, test_lifecycle, test_import) pin responses.
These pin what the service does to the database and what it raises: the
error class and its code; that it never commits (the caller's session does,
or rolls back, and then nothing is left); that a change and its audit
events commit together; and that a refusal leaves the session clean.

No key string reaches the output: keys are compared with
``expect_same_key``, and ``IssuedKey`` (whose repr holds the key) never
appears inside an ``assert``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from keyhouse import errors
from keyhouse.audit.service import CLI
from keyhouse.environments.service import EnvironmentService
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.format import KeyType, Kind
from keyhouse.keys.schemas import MAX_ROLL_GRACE_SECONDS
from keyhouse.keys.service import LAST_KEY_HORIZON, KeyService
from keyhouse.models import ApiKey, Event
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow
from tests.factories import (
    committed,
    committed_events,
    create_account,
    create_environment,
    create_key,
    expect_same_key,
    raises,
    rolled_back,
    set_expiry,
    set_limits,
)

# Not in keyhouse's format: stored as given, looked up by hash.
LEGACY_KEY = "legacy_0123456789abcdefghij"

# What a service may change of a key; hash and ciphertext are checked where they matter.
_KEY_STATE = (
    ApiKey.id,
    ApiKey.environment_id,
    ApiKey.key_type,
    ApiKey.name,
    ApiKey.revoked,
    ApiKey.revoked_at,
    ApiKey.expires_at,
    ApiKey.created_at,
    ApiKey.imported,
)

Snapshot = tuple[list[tuple[Any, ...]], list[str]]


async def snapshot(runtime: Runtime, *account_ids: str) -> Snapshot:
    """The accounts' committed keys and event ids, as another session sees them."""
    async with runtime.db.session(write=False) as session:
        keys = await session.execute(
            select(*_KEY_STATE).where(ApiKey.account_id.in_(account_ids)).order_by(ApiKey.id)
        )
        events = await session.scalars(
            select(Event.id).where(Event.account_id.in_(account_ids)).order_by(Event.id)
        )
        return [tuple(row) for row in keys.all()], list(events.all())


async def stored(runtime: Runtime, key_id: str) -> ApiKey:
    row = await committed(runtime, ApiKey, key_id)
    assert row is not None, f"key {key_id} is not stored"
    return row


async def events_after(runtime: Runtime, account_id: str, before: Snapshot) -> list[Event]:
    return [e for e in await committed_events(runtime, account_id) if e.id not in before[1]]


# -- the transaction belongs to the caller -------------------------------------------


@dataclass(frozen=True)
class Keys:
    account_id: str
    first_key_id: str
    spare_id: str


Change = Callable[[KeyService, Keys], Awaitable[object]]

# Each change, with the events it records, in order.
CHANGES: dict[str, tuple[Change, list[str]]] = {
    "create": (
        lambda s, k: s.create(k.account_id, name="new", key_type="public", actor=CLI),
        ["key.created"],
    ),
    "import": (
        lambda s, k: s.import_key(
            k.account_id, LEGACY_KEY, name="old", key_type="secret", actor=CLI
        ),
        ["key.imported"],
    ),
    "revoke": (lambda s, k: s.revoke(k.account_id, k.spare_id, actor=CLI), ["key.revoked"]),
    "rename": (
        lambda s, k: s.rename(k.account_id, k.spare_id, "renamed", actor=CLI),
        ["key.renamed"],
    ),
    "roll": (
        lambda s, k: s.roll(k.account_id, k.spare_id, grace_seconds=60, actor=CLI),
        ["key.created", "key.rolled"],
    ),
}


async def account_with_spare(runtime: Runtime) -> Keys:
    acc = await create_account(runtime)
    spare = await create_key(runtime, acc.account_id, name="spare")
    return Keys(acc.account_id, acc.key_id, spare.row.id)


class TestTransaction:
    @pytest.mark.parametrize("change", list(CHANGES))
    async def test_a_rolled_back_change_leaves_nothing(self, runtime: Runtime, change: str) -> None:
        keys = await account_with_spare(runtime)
        before = await snapshot(runtime, keys.account_id)
        call, _ = CHANGES[change]
        async with rolled_back(runtime) as session:
            await call(KeyService(session, runtime), keys)
        assert await snapshot(runtime, keys.account_id) == before

    @pytest.mark.parametrize("change", list(CHANGES))
    async def test_a_change_and_its_events_commit_together(
        self, runtime: Runtime, change: str
    ) -> None:
        keys = await account_with_spare(runtime)
        before = await snapshot(runtime, keys.account_id)
        call, event_types = CHANGES[change]
        async with runtime.db.session(write=True) as session:
            await call(KeyService(session, runtime), keys)
            # The service flushed, it did not commit: others see nothing yet.
            assert await snapshot(runtime, keys.account_id) == before
        after = await snapshot(runtime, keys.account_id)
        assert after[0] != before[0]
        new_events = await events_after(runtime, keys.account_id, before)
        assert [e.type for e in new_events] == event_types
        key_ids = {row[0] for row in after[0]}
        assert all(e.key_id in key_ids and e.actor_type == "cli" for e in new_events)


# -- refusals ---------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """One account at its key limit (3 active keys, one revoked) and another account."""

    account_id: str
    active_id: str
    revoked_id: str
    other_account_id: str
    other_key_id: str
    other_environment_id: str


async def world_at_the_limit(runtime: Runtime) -> World:
    acc = await create_account(runtime)
    active = await create_key(runtime, acc.account_id)
    revoked = await create_key(runtime, acc.account_id)
    async with runtime.db.session(write=True) as session:
        service = KeyService(session, runtime)
        await service.revoke(acc.account_id, revoked.row.id, actor=CLI)
        await service.import_key(acc.account_id, LEGACY_KEY, name="i", key_type="secret", actor=CLI)
    await set_limits(runtime, acc.account_id, maxKeys=3)
    other = await create_account(runtime, "Other")
    env = await create_environment(runtime, other.account_id, "production")
    return World(
        acc.account_id, active.row.id, revoked.row.id, other.account_id, other.key_id, env.id
    )


def broken_checksum(runtime: Runtime) -> str:
    key = runtime.key_format.generate("secret")
    return key[:-1] + ("A" if key[-1] != "A" else "B")


Refusal = Callable[[KeyService, World, Runtime], Awaitable[object]]

REFUSALS: list[Any] = [
    pytest.param(
        lambda s, w, r: s.create(w.account_id, name="n", key_type="public", actor=CLI),
        errors.KeyLimitReached,
        "key_limit_reached",
        id="create-at-the-key-limit",
    ),
    pytest.param(
        lambda s, w, r: s.create(
            w.account_id,
            name="n",
            key_type="public",
            environment_id=w.other_environment_id,
            actor=CLI,
            check_limit=False,
        ),
        errors.NotFound,
        "not_found",
        id="create-in-another-accounts-environment",
    ),
    pytest.param(
        lambda s, w, r: s.create(
            w.other_account_id, name="n", key_type="public", expires_at=utcnow(), actor=CLI
        ),
        errors.BadRequest,
        "validation_error",
        id="create-expiring-now",
    ),
    pytest.param(
        lambda s, w, r: s.import_key(
            w.other_account_id, LEGACY_KEY, name="n", key_type="secret", actor=CLI
        ),
        errors.Conflict,
        "conflict",
        id="import-a-stored-key-into-another-account",
    ),
    pytest.param(
        lambda s, w, r: s.import_key(
            w.other_account_id, broken_checksum(r), name="n", key_type="secret", actor=CLI
        ),
        errors.BadRequest,
        "validation_error",
        id="import-a-native-key-with-a-broken-checksum",
    ),
    pytest.param(
        lambda s, w, r: s.revoke(w.other_account_id, w.other_key_id, actor=CLI),
        errors.LastSecretKey,
        "last_secret_key",
        id="revoke-the-last-secret-key",
    ),
    pytest.param(
        lambda s, w, r: s.rename(w.account_id, w.other_key_id, "mine", actor=CLI),
        errors.NotFound,
        "not_found",
        id="rename-another-accounts-key",
    ),
    pytest.param(
        lambda s, w, r: s.roll(w.account_id, w.revoked_id, actor=CLI),
        errors.Conflict,
        "conflict",
        id="roll-a-revoked-key",
    ),
    pytest.param(
        lambda s, w, r: s.roll(w.account_id, w.active_id, grace_seconds=-1, actor=CLI),
        errors.BadRequest,
        "validation_error",
        id="roll-with-a-negative-grace",
    ),
    pytest.param(
        lambda s, w, r: s.roll(w.account_id, w.active_id, grace_seconds=60, actor=CLI),
        errors.KeyLimitReached,
        "key_limit_reached",
        id="roll-at-the-key-limit",
    ),
]


class TestRefusals:
    @pytest.mark.parametrize(("call", "error", "code"), REFUSALS)
    async def test_a_refusal_changes_nothing_even_if_the_caller_commits(
        self, runtime: Runtime, call: Refusal, error: type[errors.KeyhouseError], code: str
    ) -> None:
        world = await world_at_the_limit(runtime)
        before = await snapshot(runtime, world.account_id, world.other_account_id)
        async with runtime.db.session(write=True) as session:
            with raises(error, code):
                await call(KeyService(session, runtime), world, runtime)
        assert await snapshot(runtime, world.account_id, world.other_account_id) == before


# -- operations -------------------------------------------------------------------------


class TestCreate:
    @pytest.mark.parametrize("key_type", ["secret", "public"])
    async def test_only_a_hash_and_a_ciphertext_of_the_issued_key_are_stored(
        self, runtime: Runtime, key_type: KeyType
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        expires = utcnow() + timedelta(days=2)
        issued = await create_key(
            runtime,
            acc.account_id,
            key_type=key_type,
            environment_id=env.id,
            expires_at=expires,
        )
        plaintext, key_id = issued.plaintext, issued.row.id
        parsed = runtime.key_format.parse(plaintext)
        assert (parsed.kind, parsed.key_type) == (Kind.NATIVE, key_type)

        row = await stored(runtime, key_id)
        expected_hash, expected_hint = (
            hash_key(plaintext),
            runtime.key_format.mask(plaintext, key_type),
        )
        assert row.key_hash == expected_hash
        assert row.key_hint == expected_hint
        in_clear = plaintext.encode() in row.key_ciphertext
        assert not in_clear, "the ciphertext holds the key in clear"
        expect_same_key(runtime.keyring.decrypt(row.enc_kid, row.key_ciphertext, key_id), plaintext)
        assert (row.key_type, row.environment_id, row.expires_at) == (key_type, env.id, expires)
        assert (row.revoked, row.imported) == (False, False)


class TestImportKey:
    async def test_stored_as_given_marked_imported_without_expiry(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        async with runtime.db.session(write=True) as session:
            issued = await KeyService(session, runtime).import_key(
                acc.account_id, LEGACY_KEY, name="old", key_type="public", actor=CLI
            )
            key_id = issued.row.id
        row = await stored(runtime, key_id)
        expected_hash = hash_key(LEGACY_KEY)
        assert row.key_hash == expected_hash
        assert (row.imported, row.expires_at, row.key_type) == (True, None, "public")
        assert row.key_hint == "leg…ghij"
        expect_same_key(
            runtime.keyring.decrypt(row.enc_kid, row.key_ciphertext, key_id), LEGACY_KEY
        )

    @pytest.mark.parametrize(
        ("length", "accepted"), [(19, False), (20, True), (200, True), (201, False)]
    )
    async def test_length_bounds(self, runtime: Runtime, length: int, accepted: bool) -> None:
        acc = await create_account(runtime)
        key = "k" * length
        async with runtime.db.session(write=True) as session:
            service = KeyService(session, runtime)
            if accepted:
                await service.import_key(
                    acc.account_id, key, name="n", key_type="secret", actor=CLI
                )
            else:
                with raises(errors.BadRequest, "validation_error"):
                    await service.import_key(
                        acc.account_id, key, name="n", key_type="secret", actor=CLI
                    )
        types = [e.type for e in await committed_events(runtime, acc.account_id)]
        assert types.count("key.imported") == (1 if accepted else 0)


class TestGet:
    async def test_bounded_by_account_and_scope_except_for_the_operator(
        self, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        env = await create_environment(runtime, acc.account_id, "staging")
        scoped = await create_key(runtime, acc.account_id, environment_id=env.id)
        elsewhere = await create_environment(runtime, acc.account_id, "production")
        async with runtime.db.session(write=True) as session:
            service = KeyService(session, runtime)
            assert (await service.get(acc.account_id, scoped.row.id)).id == scoped.row.id
            assert (
                await service.get(acc.account_id, scoped.row.id, scope_environment_id=env.id)
            ).id == scoped.row.id
            # The operator (account None) sees every account's keys.
            assert (await service.get(None, other.key_id)).account_id == other.account_id
            for account_id, key_id, scope in [
                (acc.account_id, other.key_id, None),
                (acc.account_id, scoped.row.id, elsewhere.id),
                (acc.account_id, acc.key_id, env.id),
            ]:
                with raises(errors.NotFound, "not_found"):
                    await service.get(account_id, key_id, scope_environment_id=scope)

    async def test_what_is_not_a_key_id_is_not_found_and_not_echoed(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        # A key pasted where its id belongs, a NUL byte (PostgreSQL would raise
        # on it if it were queried), another kind of id.
        for candidate in [acc.key, "key_\x00", acc.account_id, ""]:
            async with runtime.db.session(write=True) as session:
                with raises(errors.NotFound, "not_found") as caught:
                    await KeyService(session, runtime).get(acc.account_id, candidate)
            error = caught.value
            echoed = bool(candidate) and candidate in f"{error.message} {error.fix}"
            assert not echoed, "the error repeats what was given as an id"


# Which other key of the account is a way back in, so that revoking the
# first (account-wide secret) key needs no force.
GUARD_CASES: list[Any] = [
    pytest.param(None, False, id="no-other-key"),
    pytest.param({"key_type": "public"}, False, id="public-key"),
    pytest.param({"environment": True}, False, id="environment-secret-key"),
    pytest.param({"revoked": True}, False, id="revoked-secret-key"),
    pytest.param(
        {"expires_in": LAST_KEY_HORIZON - timedelta(minutes=1)},
        False,
        id="expiring-within-the-hour",
    ),
    pytest.param(
        {"expires_in": LAST_KEY_HORIZON + timedelta(minutes=1)},
        True,
        id="expiring-after-the-hour",
    ),
    pytest.param({}, True, id="secret-key-without-expiry"),
]


class TestRevoke:
    @pytest.mark.parametrize(("other", "allowed"), GUARD_CASES)
    async def test_last_secret_key_guard(
        self, runtime: Runtime, other: dict[str, Any] | None, allowed: bool
    ) -> None:
        acc = await create_account(runtime)
        if other is not None:
            env = None
            if other.get("environment"):
                env = (await create_environment(runtime, acc.account_id, "staging")).id
            expires_in: timedelta | None = other.get("expires_in")
            made = await create_key(
                runtime,
                acc.account_id,
                key_type=other.get("key_type", "secret"),
                environment_id=env,
                expires_at=None if expires_in is None else utcnow() + expires_in,
            )
            if other.get("revoked"):
                async with runtime.db.session(write=True) as session:
                    await KeyService(session, runtime).revoke(
                        acc.account_id, made.row.id, actor=CLI
                    )
        async with runtime.db.session(write=True) as session:
            service = KeyService(session, runtime)
            if allowed:
                await service.revoke(acc.account_id, acc.key_id, actor=CLI)
            else:
                with raises(errors.LastSecretKey, "last_secret_key"):
                    await service.revoke(acc.account_id, acc.key_id, actor=CLI)
        assert (await stored(runtime, acc.key_id)).revoked is allowed

    async def test_force_then_again_without_force_changes_nothing_more(
        self, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        low = utcnow()
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(
                acc.account_id, acc.key_id, force=True, actor=CLI
            )
        high = utcnow()
        row = await stored(runtime, acc.key_id)
        assert row.revoked is True
        assert row.revoked_at is not None
        assert low <= row.revoked_at <= high
        # Revoked already: no guard to pass, no second event, the time kept.
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(acc.account_id, acc.key_id, actor=CLI)
        assert (await stored(runtime, acc.key_id)).revoked_at == row.revoked_at
        types = [e.type for e in await committed_events(runtime, acc.account_id)]
        assert types.count("key.revoked") == 1


class TestRename:
    async def test_records_the_previous_name_and_only_real_changes(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        target = await create_key(runtime, acc.account_id, name="before")
        for name in ["after", "after"]:
            async with runtime.db.session(write=True) as session:
                await KeyService(session, runtime).rename(
                    acc.account_id, target.row.id, name, actor=CLI
                )
        assert (await stored(runtime, target.row.id)).name == "after"
        renamed = [
            (e.key_id, e.data)
            for e in await committed_events(runtime, acc.account_id)
            if e.type == "key.renamed"
        ]
        assert renamed == [(target.row.id, {"previousName": "before"})]


class TestRoll:
    async def test_the_new_key_replaces_the_old_and_the_events_link_them(
        self, runtime: Runtime
    ) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "production")
        old = await create_key(
            runtime, acc.account_id, key_type="public", name="widget", environment_id=env.id
        )
        old_id, old_plaintext = old.row.id, old.plaintext
        low = utcnow()
        async with runtime.db.session(write=True) as session:
            new = await KeyService(session, runtime).roll(
                acc.account_id, old_id, grace_seconds=600, actor=CLI
            )
            new_id, new_plaintext = new.row.id, new.plaintext
        high = utcnow()
        same = new_plaintext == old_plaintext
        assert not same, "the new key is the old key string"
        assert runtime.key_format.parse(new_plaintext).key_type == "public"

        old_row, new_row = await stored(runtime, old_id), await stored(runtime, new_id)
        assert (new_row.name, new_row.key_type, new_row.environment_id, new_row.expires_at) == (
            "widget",
            "public",
            env.id,
            None,
        )
        assert old_row.expires_at is not None
        assert low + timedelta(seconds=600) <= old_row.expires_at <= high + timedelta(seconds=600)
        assert old_row.revoked is False

        events = [
            (e.type, e.key_id, e.environment_id, e.data)
            for e in await committed_events(runtime, acc.account_id)
        ][-2:]
        assert events == [
            ("key.created", new_id, env.id, {"rolledFrom": old_id}),
            (
                "key.rolled",
                old_id,
                env.id,
                {"rolledTo": new_id, "expiresAt": format_ts(old_row.expires_at)},
            ),
        ]

    @pytest.mark.parametrize(
        ("remaining", "grace", "shortened"),
        [
            pytest.param(timedelta(hours=1), 86_400, False, id="grace-longer-than-life"),
            pytest.param(timedelta(hours=1), 60, True, id="grace-shorter-than-life"),
            pytest.param(None, 0, True, id="no-expiry-zero-grace"),
            pytest.param(None, MAX_ROLL_GRACE_SECONDS, True, id="no-expiry-longest-grace"),
        ],
    )
    async def test_never_extends_a_keys_life(
        self, runtime: Runtime, remaining: timedelta | None, grace: int, shortened: bool
    ) -> None:
        acc = await create_account(runtime)
        original = None if remaining is None else utcnow() + remaining
        old = await create_key(runtime, acc.account_id, expires_at=original)
        old_id = old.row.id
        low = utcnow()
        async with runtime.db.session(write=True) as session:
            new = await KeyService(session, runtime).roll(
                acc.account_id, old_id, grace_seconds=grace, actor=CLI
            )
            new_id = new.row.id
        high = utcnow()
        old_expiry = (await stored(runtime, old_id)).expires_at
        # The new key lives as long as the old one would have.
        assert (await stored(runtime, new_id)).expires_at == original
        if shortened:
            assert old_expiry is not None
            assert low + timedelta(seconds=grace) <= old_expiry <= high + timedelta(seconds=grace)
        else:
            assert old_expiry == original

    async def test_expired_or_revoked_keys_cannot_be_rolled(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        expired = await create_key(runtime, acc.account_id)
        await set_expiry(runtime, expired.row.id, utcnow() - timedelta(seconds=1))
        revoked = await create_key(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(acc.account_id, revoked.row.id, actor=CLI)
        for key_id in [expired.row.id, revoked.row.id]:
            async with runtime.db.session(write=True) as session:
                with raises(errors.Conflict, "conflict"):
                    await KeyService(session, runtime).roll(acc.account_id, key_id, actor=CLI)

    @pytest.mark.parametrize("grace", [-1, MAX_ROLL_GRACE_SECONDS + 1])
    async def test_grace_out_of_range_is_a_bad_request(self, runtime: Runtime, grace: int) -> None:
        acc = await create_account(runtime)
        async with runtime.db.session(write=True) as session:
            with raises(errors.BadRequest, "validation_error"):
                await KeyService(session, runtime).roll(
                    acc.account_id, acc.key_id, grace_seconds=grace, actor=CLI
                )


class TestListObjects:
    async def test_filters_and_environment_scope(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        other = await create_account(runtime, "Other")
        staging = await create_environment(runtime, acc.account_id, "staging")
        production = await create_environment(runtime, acc.account_id, "production")
        foreign = await create_environment(runtime, other.account_id, "staging")
        public = await create_key(
            runtime, acc.account_id, key_type="public", environment_id=staging.id
        )
        revoked = await create_key(runtime, acc.account_id, environment_id=staging.id)
        prod = await create_key(runtime, acc.account_id, environment_id=production.id)
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(acc.account_id, revoked.row.id, actor=CLI)
        first, pub, rev, prd = acc.key_id, public.row.id, revoked.row.id, prod.row.id

        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({}, [prd, rev, pub, first]),
            ({"environment_id": staging.id}, [rev, pub]),
            ({"key_type": "public"}, [pub]),
            ({"revoked": True}, [rev]),
            ({"revoked": False}, [prd, pub, first]),
            ({"environment_id": staging.id, "revoked": False, "key_type": "public"}, [pub]),
            ({"scope_environment_id": production.id}, [prd]),
            ({"scope_environment_id": production.id, "environment_id": production.id}, [prd]),
            # A scoped caller asking for another environment gets nothing, not that one.
            ({"scope_environment_id": production.id, "environment_id": staging.id}, []),
            ({"environment_id": foreign.id}, []),
            ({"environment_id": "staging"}, []),
        ]
        async with runtime.db.session(write=False) as session:
            service = KeyService(session, runtime)
            for filters, expected in cases:
                listed = await service.list_objects(acc.account_id, **filters, viewer=None)
                assert [o["id"] for o in listed] == expected, filters

    @pytest.mark.parametrize(
        ("setting", "reveal", "secret_shown"),
        [
            pytest.param(True, None, True, id="setting-reveals"),
            pytest.param(False, None, False, id="setting-masks"),
            pytest.param(True, False, False, id="argument-masks"),
            pytest.param(False, True, True, id="argument-reveals"),
        ],
    )
    async def test_reveal_argument_wins_over_the_setting(
        self,
        runtime: Runtime,
        monkeypatch: pytest.MonkeyPatch,
        setting: bool,
        reveal: bool | None,
        secret_shown: bool,
    ) -> None:
        monkeypatch.setattr(
            runtime, "settings", runtime.settings.model_copy(update={"list_reveals_keys": setting})
        )
        acc = await create_account(runtime)
        public = await create_key(runtime, acc.account_id, key_type="public")
        async with runtime.db.session(write=False) as session:
            listed = await KeyService(session, runtime).list_objects(
                acc.account_id, reveal=reveal, viewer=None
            )
        shown = {o["id"]: o["key"] for o in listed}
        # Public keys are meant for client-side code: always in full.
        expect_same_key(shown[public.row.id], public.plaintext)
        if secret_shown:
            expect_same_key(shown[acc.key_id], acc.key)
        else:
            expect_same_key(shown[acc.key_id], runtime.key_format.mask(acc.key, "secret"))


class TestKeyLimit:
    async def test_only_keys_in_force_count(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        env = await create_environment(runtime, acc.account_id, "staging")
        await create_key(runtime, acc.account_id, key_type="public", environment_id=env.id)
        revoked = await create_key(runtime, acc.account_id)
        expired = await create_key(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).revoke(acc.account_id, revoked.row.id, actor=CLI)
        await set_expiry(runtime, expired.row.id, utcnow() - timedelta(seconds=1))
        await set_limits(runtime, acc.account_id, maxKeys=3)

        # In force: the first key and the public one; revoked and expired do not count.
        async with runtime.db.session(write=True) as session:
            await KeyService(session, runtime).create(
                acc.account_id, name="third", key_type="secret", actor=CLI
            )
        async with runtime.db.session(write=True) as session:
            service = KeyService(session, runtime)
            with raises(errors.KeyLimitReached, "key_limit_reached") as caught:
                await service.create(acc.account_id, name="fourth", key_type="secret", actor=CLI)
            with raises(errors.KeyLimitReached, "key_limit_reached"):
                await service.import_key(
                    acc.account_id, LEGACY_KEY, name="old", key_type="secret", actor=CLI
                )
        assert caught.value.fix is not None
        assert "3 of 3 keys are active" in caught.value.fix


UNKNOWN_ACCOUNT = "acc_" + "0" * 26


class TestUnknownAccount:
    """The service checks that the account exists; callers do not have to."""

    async def test_create(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound) as caught:
                await KeyService(session, runtime).create(
                    UNKNOWN_ACCOUNT, name="k", key_type="secret", actor=CLI
                )
        assert caught.value.status_code == 404
        assert caught.value.code == "not_found"

    async def test_import_before_the_key_is_looked_at(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound):
                # Too short to import: the unknown account is reported first.
                await KeyService(session, runtime).import_key(
                    UNKNOWN_ACCOUNT, "short", name="k", key_type="secret", actor=CLI
                )

    async def test_environment_create(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with pytest.raises(errors.AccountNotFound):
                await EnvironmentService(session).create(UNKNOWN_ACCOUNT, "prod", actor=CLI)
