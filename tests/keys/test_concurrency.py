"""Key writes hold under concurrency: two processes, requests at the same moment.

Every check-then-act on keys (the plan's maxKeys on create, import and roll;
a key's state read, then written by revoke, roll and rename; an imported
key's hash, unique across accounts) is raced across two ``keyhouse serve``
processes on both engines. Without the account's row lock (or the unique
index mapped to 409) these failed on PostgreSQL: more keys than the plan,
two ``key.revoked`` events for one key, a grace-0 key rolled twice, a roll
of a key revoked meanwhile, rename events that lost a name, a 500 for a
duplicate import.
"""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable

import httpx

from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.concurrency import active_keys, codes, events_of, race, with_runtime
from tests.factories import AccountWithKey, bearer, create_account, create_key
from tests.limits.conftest import served
from tests.limits.helpers import account_on_plan

PUBLIC = {"name": "k", "keyType": "public"}


def foreign_key() -> str:
    return "ext_" + secrets.token_urlsafe(33)


async def test_max_keys_holds_for_concurrent_creates_imports_and_rolls(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()

    async def setup(
        runtime: Runtime,
    ) -> tuple[AccountWithKey, AccountWithKey, AccountWithKey, list[str], str]:
        creates = await account_on_plan(runtime, maxKeys=5)
        imports = await account_on_plan(runtime, maxKeys=3)
        # Two keys in force and room for one more: each roll with grace needs that place.
        rolls = await account_on_plan(runtime, maxKeys=3)
        second = await create_key(runtime, rolls.account_id)
        return creates, imports, rolls, [rolls.key_id, second.row.id], runtime.admin_tokens.first

    creates, imports, rolls, to_roll, token = await with_runtime(settings, setup)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            created = await race(
                client, urls, [("POST", "/keys", {"headers": creates.auth, "json": PUBLIC})] * 20
            )
            imported = await race(
                client,
                urls,
                [
                    (
                        "POST",
                        f"/admin/accounts/{imports.account_id}/keys/import",
                        {"headers": bearer(token), "json": {**PUBLIC, "key": foreign_key()}},
                    )
                    for _ in range(10)
                ],
            )
            rolled = await race(
                client,
                urls,
                [
                    ("POST", f"/keys/{key_id}/roll", {"headers": rolls.auth, "json": {}})
                    for key_id in to_roll
                ]
                + [("POST", "/keys", {"headers": rolls.auth, "json": PUBLIC})] * 4,
            )
    assert Counter(codes(created)) == {(201, None): 4, (402, "key_limit_reached"): 16}
    assert Counter(codes(imported)) == {(201, None): 2, (402, "key_limit_reached"): 8}
    assert Counter(codes(rolled)) == {(201, None): 1, (402, "key_limit_reached"): 5}

    async def counts(runtime: Runtime) -> list[int]:
        return [await active_keys(runtime, a.account_id) for a in (creates, imports, rolls)]

    assert await with_runtime(settings, counts) == [5, 3, 3]


async def test_one_key_changes_in_one_order(make_settings: Callable[..., Settings]) -> None:
    """Two changes of one key at once: the outcome of one order or the other, never a mix."""
    settings = make_settings()
    trials = 6

    async def setup(runtime: Runtime) -> tuple[AccountWithKey, list[list[str]]]:
        acc = await create_account(runtime)
        # Per trial: a key revoked twice, one rolled twice, one revoked and rolled, one renamed.
        ids = [
            [
                (await create_key(runtime, acc.account_id, key_type="public")).row.id
                for _ in range(4)
            ]
            for _ in range(trials)
        ]
        return acc, ids

    acc, ids = await with_runtime(settings, setup)
    names = [f"name {i}" for i in range(4)]
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            results = []
            for revoked_twice, rolled_twice, revoked_and_rolled, renamed in ids:
                results.append(
                    await race(
                        client,
                        urls,
                        [
                            ("POST", f"/keys/{revoked_twice}/revoke", {"headers": acc.auth}),
                            ("POST", f"/keys/{revoked_twice}/revoke", {"headers": acc.auth}),
                            (
                                "POST",
                                f"/keys/{rolled_twice}/roll",
                                {"headers": acc.auth, "json": {"expiresInSeconds": 0}},
                            ),
                            (
                                "POST",
                                f"/keys/{rolled_twice}/roll",
                                {"headers": acc.auth, "json": {"expiresInSeconds": 0}},
                            ),
                            ("POST", f"/keys/{revoked_and_rolled}/revoke", {"headers": acc.auth}),
                            (
                                "POST",
                                f"/keys/{revoked_and_rolled}/roll",
                                {"headers": acc.auth, "json": {"expiresInSeconds": 60}},
                            ),
                            *(
                                (
                                    "PATCH",
                                    f"/keys/{renamed}",
                                    {"headers": acc.auth, "json": {"name": n}},
                                )
                                for n in names
                            ),
                        ],
                    )
                )
    for answers in results:
        outcome = codes(answers)
        # Revoked twice: both 200 (revoking a revoked key succeeds and changes nothing).
        assert outcome[0:2] == [(200, None), (200, None)]
        # Rolled twice with grace 0: the second finds the key expired.
        assert sorted(outcome[2:4]) == [(201, None), (409, "conflict")]
        # Revoked and rolled: revoke first and the roll is refused, or roll first and
        # the revoke's answer shows the expiry the roll gave the key.
        revoke, roll = answers[4], answers[5]
        assert revoke.status_code == 200
        if roll.status_code == 201:
            saw_the_roll = "expiresAt" in revoke.json()
            assert saw_the_roll, "a roll of a key being revoked"
        else:
            assert codes([roll]) == [(409, "conflict")]
        assert all(status == 200 for status, _ in outcome[6:])

    async def events(runtime: Runtime) -> tuple[Counter[str], Counter[str], list[list[str]]]:
        revoked = Counter(
            e.key_id or "" for e in await events_of(runtime, acc.account_id, "key.revoked")
        )
        rolled = Counter(
            e.key_id or "" for e in await events_of(runtime, acc.account_id, "key.rolled")
        )
        renames: dict[str, list[str]] = {}
        for event in await events_of(runtime, acc.account_id, "key.renamed"):
            renames.setdefault(event.key_id or "", []).append((event.data or {})["previousName"])
        return revoked, rolled, [renames.get(trial[3], []) for trial in ids]

    revoked, rolled, renames = await with_runtime(settings, events)
    for revoked_twice, rolled_twice, _, _ in ids:
        assert revoked[revoked_twice] == 1, "one key, two key.revoked events"
        assert rolled[rolled_twice] == 1, "a key rolled twice with grace 0"
    for previous in renames:
        # Each rename starts from the name the one before it gave: a chain, no name lost.
        assert previous[0] == "test key"
        assert len(set(previous)) == len(previous) == len(names)
        assert set(previous[1:]) <= set(names)


async def test_an_imported_key_is_stored_once(make_settings: Callable[..., Settings]) -> None:
    """The same key imported at once into one account and into another: one 201, 409s."""
    settings = make_settings()

    async def setup(runtime: Runtime) -> tuple[str, str, str]:
        first = await create_account(runtime)
        second = await create_account(runtime)
        return first.account_id, second.account_id, runtime.admin_tokens.first

    first, second, token = await with_runtime(settings, setup)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            for _ in range(5):
                key = foreign_key()
                answers = await race(
                    client,
                    urls,
                    [
                        (
                            "POST",
                            f"/admin/accounts/{account_id}/keys/import",
                            {"headers": bearer(token), "json": {**PUBLIC, "key": key}},
                        )
                        for account_id in (first, second, first, second)
                    ],
                )
                assert Counter(codes(answers)) == {(201, None): 1, (409, "conflict"): 3}
