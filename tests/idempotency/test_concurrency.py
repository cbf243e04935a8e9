"""One Idempotency-Key sent many times at once, to two processes: exactly one write.

The claim is a row inserted in the write's transaction: a second request
with the key waits for the first's transaction (PostgreSQL: the primary
key's lock; SQLite: the write lock), then answers with its stored answer.
Never both run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy import func, select

from keyhouse.config import Settings
from keyhouse.models import ApiKey, IdempotencyRecord
from keyhouse.runtime import Runtime
from tests.concurrency import codes, race, with_runtime
from tests.factories import AccountWithKey, create_account, create_key
from tests.limits.conftest import served

PUBLIC = {"name": "k", "keyType": "public"}


async def test_the_same_request_at_once_writes_once_and_every_answer_is_the_first(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()

    async def setup(runtime: Runtime) -> tuple[AccountWithKey, str]:
        acc = await create_account(runtime)
        return acc, (await create_key(runtime, acc.account_id)).row.id

    acc, key_id = await with_runtime(settings, setup)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            created = await race(
                client,
                urls,
                [
                    (
                        "POST",
                        "/keys",
                        {"headers": {**acc.auth, "Idempotency-Key": "c"}, "json": PUBLIC},
                    )
                ]
                * 10,
            )
            rolled = await race(
                client,
                urls,
                [
                    (
                        "POST",
                        f"/keys/{key_id}/roll",
                        {
                            "headers": {**acc.auth, "Idempotency-Key": "r"},
                            "json": {"expiresInSeconds": 0},
                        },
                    )
                ]
                * 10,
            )
    for answers in (created, rolled):
        assert codes(answers) == [(201, None)] * 10
        bodies = {answer.content for answer in answers}
        assert len(bodies) == 1, "two different answers for one Idempotency-Key"
        assert sum("idempotent-replayed" in answer.headers for answer in answers) == 9

    async def counts(runtime: Runtime) -> tuple[int, int]:
        async with runtime.db.session(write=False) as session:
            keys = await session.scalar(
                select(func.count()).where(ApiKey.account_id == acc.account_id)
            )
            records = await session.scalar(select(func.count()).select_from(IdempotencyRecord))
        return int(keys or 0), int(records or 0)

    # The first key, the one rolled, one created and one made by the roll.
    assert await with_runtime(settings, counts) == (4, 2)


async def test_different_requests_with_one_key_at_once_run_one(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    acc: AccountWithKey = await with_runtime(settings, create_account)
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await race(
                client,
                urls,
                [
                    (
                        "POST",
                        "/keys",
                        {
                            "headers": {**acc.auth, "Idempotency-Key": "one"},
                            "json": {**PUBLIC, "name": f"k{i % 2}"},
                        },
                    )
                    for i in range(10)
                ],
            )
    outcome = Counter(codes(answers))
    assert outcome[(409, "idempotency_key_reused")] >= 1
    assert set(outcome) <= {(201, None), (409, "idempotency_key_reused")}
    names = {answer.json()["name"] for answer in answers if answer.status_code == 201}
    assert len(names) == 1, "two requests ran with one Idempotency-Key"

    async def keys(runtime: Runtime) -> int:
        async with runtime.db.session(write=False) as session:
            count = await session.scalar(
                select(func.count()).where(ApiKey.account_id == acc.account_id)
            )
        return int(count or 0)

    assert await with_runtime(settings, keys) == 2
