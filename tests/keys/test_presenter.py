"""``keys.presenter``: the one place that decides whether ``key`` is shown in full.

A key just issued is always in full; an existing key is in full unless the
operator set ``KEYHOUSE_LIST_REVEALS_KEYS=false``, and then only secret keys
are masked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from keyhouse.config import Settings
from keyhouse.keys.presenter import issued_key_object, key_object, key_objects
from keyhouse.keys.service import KeyService
from keyhouse.runtime import Runtime
from tests.factories import create_account, create_key, expect_same_key, mask


@pytest.fixture(params=[True, False], ids=["reveals", "masks"])
async def runtime(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings]
) -> AsyncIterator[Runtime]:
    rt = Runtime.build(make_settings(list_reveals_keys=request.param))
    try:
        yield rt
    finally:
        await rt.close()


class TestRevealPolicy:
    async def test_an_issued_key_is_always_in_full(self, runtime: Runtime) -> None:
        account = await create_account(runtime)
        for key_type in ("secret", "public"):
            issued = await create_key(runtime, account.account_id, key_type=key_type)
            expect_same_key(issued_key_object(runtime, issued.row)["key"], issued.plaintext)

    async def test_an_existing_secret_key_follows_the_setting(self, runtime: Runtime) -> None:
        account = await create_account(runtime)
        issued = await create_key(runtime, account.account_id, key_type="secret")
        async with runtime.db.session(write=False) as session:
            row = await KeyService(session, runtime).get(account.account_id, issued.row.id)
            shown = key_object(runtime, row, viewer=None)["key"]
        revealed = shown == issued.plaintext  # a boolean first: pytest would print the keys
        assert revealed is runtime.settings.list_reveals_keys

    async def test_an_existing_public_key_is_always_in_full(self, runtime: Runtime) -> None:
        account = await create_account(runtime)
        issued = await create_key(runtime, account.account_id, key_type="public")
        async with runtime.db.session(write=False) as session:
            row = await KeyService(session, runtime).get(account.account_id, issued.row.id)
            expect_same_key(key_object(runtime, row, viewer=None)["key"], issued.plaintext)

    async def test_a_listing_follows_the_setting_unless_told(self, runtime: Runtime) -> None:
        account = await create_account(runtime)
        issued = await create_key(runtime, account.account_id, key_type="secret", name="one")
        async with runtime.db.session(write=False) as session:
            service = KeyService(session, runtime)
            listed = await service.list_objects(account.account_id, viewer=None)
            rows = await service.repo.list(account.account_id)
            told = key_objects(runtime, account.account_id, rows, reveal=True, viewer=None)
        [shown] = [k["key"] for k in listed if k["id"] == issued.row.id]
        revealed = shown == issued.plaintext
        assert revealed is runtime.settings.list_reveals_keys
        [full] = [k["key"] for k in told if k["id"] == issued.row.id]
        expect_same_key(full, issued.plaintext)

    async def test_the_masked_form_is_prefix_and_last_four(self, runtime: Runtime) -> None:
        account = await create_account(runtime)
        issued = await create_key(runtime, account.account_id, key_type="secret")
        async with runtime.db.session(write=False) as session:
            row = await KeyService(session, runtime).get(account.account_id, issued.row.id)
            shown = key_object(runtime, row, viewer=None)["key"]
        if not runtime.settings.list_reveals_keys:
            expect_same_key(shown, mask(issued.plaintext))
