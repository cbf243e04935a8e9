"""Account updates hold under concurrency: decided on the plan as committed (two processes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx

from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.concurrency import active_keys, codes, events_of, race, with_runtime
from tests.factories import AccountWithKey, bearer
from tests.limits.conftest import served
from tests.limits.helpers import account_on_plan

PUBLIC = {"name": "k", "keyType": "public"}


async def test_identical_updates_at_once_record_one_change(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()

    async def setup(runtime: Runtime) -> tuple[list[AccountWithKey], str]:
        accounts = [await account_on_plan(runtime, maxKeys=10) for _ in range(4)]
        return accounts, runtime.admin_tokens.first

    accounts, token = await with_runtime(settings, setup)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            for acc in accounts:
                patch = {"headers": bearer(token), "json": {"limits": {"maxKeys": 5}}}
                answers = await race(
                    client, urls, [("PATCH", f"/admin/accounts/{acc.account_id}", patch)] * 4
                )
                assert codes(answers) == [(200, None)] * 4

    async def updates(runtime: Runtime) -> list[int]:
        return [
            len(await events_of(runtime, acc.account_id, "account.updated")) for acc in accounts
        ]

    # One from the setup (maxKeys 10), one from the race.
    assert await with_runtime(settings, updates) == [2] * len(accounts)


async def test_a_plan_lowered_during_creates_is_never_exceeded_after(
    make_settings: Callable[..., Settings],
) -> None:
    """maxKeys 10 -> 4 while 12 creates run: whatever the order, no more than 10 in all,
    and once the change has committed, a create sees it."""
    settings = make_settings()

    async def setup(runtime: Runtime) -> tuple[AccountWithKey, str]:
        return await account_on_plan(runtime, maxKeys=10), runtime.admin_tokens.first

    acc, token = await with_runtime(settings, setup)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            patch = {"headers": bearer(token), "json": {"limits": {"maxKeys": 4}}}
            answers = await race(
                client,
                urls,
                [("POST", "/keys", {"headers": acc.auth, "json": PUBLIC})] * 6
                + [("PATCH", f"/admin/accounts/{acc.account_id}", patch)]
                + [("POST", "/keys", {"headers": acc.auth, "json": PUBLIC})] * 6,
            )
            after = await client.post(f"{urls[0]}/keys", headers=acc.auth, json=PUBLIC)
    outcome = Counter(codes(answers))
    assert set(outcome) <= {(200, None), (201, None), (402, "key_limit_reached")}
    assert outcome[(200, None)] == 1
    assert codes([after]) == [(402, "key_limit_reached")]
    active = await with_runtime(settings, lambda runtime: active_keys(runtime, acc.account_id))
    assert active == 1 + outcome[(201, None)] <= 10
