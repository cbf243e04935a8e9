"""AccountService called directly, the way the operator API and the CLI call it.

The HTTP tests (test_endpoints) pin the responses and which members change;
these pin the transaction (an account, its first key and their events
commit together or not at all) and what a limit change does to the cache of
verified keys, which carry their account's plan.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from keyhouse import errors
from keyhouse.accounts.schemas import LimitsUpdate
from keyhouse.accounts.service import FIRST_KEY_NAME, AccountService
from keyhouse.audit.service import CLI
from keyhouse.db.notify import CLEAR_CACHE_AFTER_COMMIT
from keyhouse.keys.verify import Verifier
from keyhouse.models import Account, ApiKey
from keyhouse.runtime import Runtime
from tests.factories import (
    committed,
    committed_events,
    create_account,
    notification_count,
    notified,
    raises,
    rolled_back,
)


async def key_rows(runtime: Runtime, account_id: str) -> list[ApiKey]:
    async with runtime.db.session(write=False) as session:
        result = await session.scalars(select(ApiKey).where(ApiKey.account_id == account_id))
        return list(result.all())


class TestCreate:
    async def test_account_first_key_and_events_commit_together(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            new = await AccountService(session, runtime).create(
                "Acme", limits=LimitsUpdate(maxKeys=0), actor=CLI
            )
            account_id, key_id = new.account.id, new.key.row.id
            # Flushed, not committed: another session sees none of it yet.
            assert await committed(runtime, Account, account_id) is None
            assert await committed(runtime, ApiKey, key_id) is None
        account = await committed(runtime, Account, account_id)
        assert account is not None
        assert account.max_keys == 0
        # The first key comes whatever maxKeys says: an account-wide secret key.
        keys = [
            (k.id, k.name, k.key_type, k.environment_id)
            for k in await key_rows(runtime, account_id)
        ]
        assert keys == [(key_id, FIRST_KEY_NAME, "secret", None)]
        events = [(e.type, e.key_id) for e in await committed_events(runtime, account_id)]
        assert events == [("account.created", None), ("key.created", key_id)]

    async def test_rolled_back_leaves_no_account_key_or_event(self, runtime: Runtime) -> None:
        async with rolled_back(runtime) as session:
            new = await AccountService(session, runtime).create("Acme", actor=CLI)
            account_id, key_id = new.account.id, new.key.row.id
        assert await committed(runtime, Account, account_id) is None
        assert await committed(runtime, ApiKey, key_id) is None
        assert await committed_events(runtime, account_id) == []

    async def test_defaults_come_from_the_runtimes_settings(
        self, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        defaults = {
            "default_max_keys": 3,
            "default_monthly_requests": 1000,
            "default_rate_per_second": 5,
            "default_burst": None,
        }
        monkeypatch.setattr(runtime, "settings", runtime.settings.model_copy(update=defaults))
        async with runtime.db.session(write=True) as session:
            new = await AccountService(session, runtime).create(
                "Acme", limits=LimitsUpdate(burst=20), actor=CLI
            )
        account = await committed(runtime, Account, new.account.id)
        assert account is not None
        limits = (
            account.max_keys,
            account.monthly_requests,
            account.rate_per_second,
            account.burst,
        )
        assert limits == (3, 1000, 5, 20)


class TestGet:
    async def test_unknown_or_malformed_id_is_not_found(self, runtime: Runtime) -> None:
        acc = await create_account(runtime)
        async with runtime.db.session(write=False) as session:
            service = AccountService(session, runtime)
            assert (await service.get(acc.account_id)).id == acc.account_id
            for account_id in ["acc_" + "0" * 26, "acc_\x00", acc.key_id, ""]:
                with raises(errors.AccountNotFound, "not_found"):
                    await service.get(account_id)


class TestUpdate:
    @pytest.mark.parametrize(
        ("name", "limits", "changed"),
        [
            pytest.param("Acme", None, None, id="same-name"),
            pytest.param(None, LimitsUpdate(maxKeys=100), None, id="same-limit"),
            pytest.param("Renamed", None, {"name": "Renamed"}, id="rename"),
            # Given as null: unlimited. Left out: kept.
            pytest.param(
                None, LimitsUpdate(maxKeys=None), {"maxKeys": None}, id="null-is-unlimited"
            ),
            pytest.param(
                "Renamed",
                LimitsUpdate(maxKeys=100, burst=7),
                {"name": "Renamed", "burst": 7},
                id="only-what-differs",
            ),
        ],
    )
    async def test_records_exactly_what_changed(
        self,
        runtime: Runtime,
        name: str | None,
        limits: LimitsUpdate | None,
        changed: dict[str, Any] | None,
    ) -> None:
        acc = await create_account(runtime, "Acme")
        before = await committed_events(runtime, acc.account_id)
        async with runtime.db.session(write=True) as session:
            await AccountService(session, runtime).update(
                acc.account_id, name=name, limits=limits, actor=CLI
            )
        new = (await committed_events(runtime, acc.account_id))[len(before) :]
        if changed is None:
            assert new == []
        else:
            assert [(e.type, e.data) for e in new] == [("account.updated", {"changed": changed})]
        account = await committed(runtime, Account, acc.account_id)
        assert account is not None
        kept = limits is None or "maxKeys" not in limits.model_fields_set
        expected_max_keys = 100 if kept or limits is None else limits.maxKeys
        assert (account.name, account.max_keys) == (name or "Acme", expected_max_keys)

    @pytest.mark.parametrize(
        ("name", "limits", "clears"),
        [
            pytest.param("Renamed", None, False, id="rename"),
            pytest.param(None, LimitsUpdate(maxKeys=100), False, id="same-limit"),
            pytest.param(None, LimitsUpdate(monthlyRequests=10), True, id="limit-change"),
        ],
    )
    async def test_a_plan_change_drops_cached_keys_here_and_in_every_process(
        self, runtime: Runtime, name: str | None, limits: LimitsUpdate | None, clears: bool
    ) -> None:
        heard = notification_count(runtime)
        acc = await create_account(runtime, "Acme")
        # PostgreSQL: the creation's NOTIFY would drop the entry made below.
        await notified(runtime, heard)
        # Verifying caches the key with its account's plan.
        cached = len(runtime.cache)
        verdict = await Verifier(runtime).verify(acc.key)
        assert verdict.valid
        assert len(runtime.cache) == cached + 1
        async with runtime.db.session(write=True) as session:
            await AccountService(session, runtime).update(
                acc.account_id, name=name, limits=limits, actor=CLI
            )
            # At once in this process; after the commit (PostgreSQL: a NOTIFY) in all.
            assert len(runtime.cache) == (0 if clears else cached + 1)
            assert session.info.get(CLEAR_CACHE_AFTER_COMMIT, False) is clears

    async def test_unknown_account_is_not_found(self, runtime: Runtime) -> None:
        async with runtime.db.session(write=True) as session:
            with raises(errors.AccountNotFound, "not_found"):
                await AccountService(session, runtime).update(
                    "acc_" + "0" * 26, name="x", actor=CLI
                )

    async def test_rolled_back_update_leaves_nothing(self, runtime: Runtime) -> None:
        acc = await create_account(runtime, "Acme")
        before = await committed_events(runtime, acc.account_id)
        async with rolled_back(runtime) as session:
            await AccountService(session, runtime).update(
                acc.account_id, name="Renamed", limits=LimitsUpdate(maxKeys=1), actor=CLI
            )
        account = await committed(runtime, Account, acc.account_id)
        assert account is not None
        assert (account.name, account.max_keys) == ("Acme", 100)
        assert [e.id for e in await committed_events(runtime, acc.account_id)] == [
            e.id for e in before
        ]
