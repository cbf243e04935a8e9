"""One environment of a name, however many ask for it at once (two processes)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import httpx
from sqlalchemy import func, select

from keyhouse.config import Settings
from keyhouse.models import Environment
from keyhouse.runtime import Runtime
from tests.concurrency import codes, race, with_runtime
from tests.factories import AccountWithKey, create_account
from tests.limits.conftest import served


async def test_one_environment_of_a_name(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    acc: AccountWithKey = await with_runtime(settings, create_account)
    names = ["production", "staging", "preview"]
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=60) as client:
            answers = {
                name: await race(
                    client,
                    urls,
                    [("POST", "/environments", {"headers": acc.auth, "json": {"name": name}})] * 8,
                )
                for name in names
            }
    for name in names:
        assert Counter(codes(answers[name])) == {(201, None): 1, (409, "conflict"): 7}, name

    async def stored(runtime: Runtime) -> dict[str, int]:
        async with runtime.db.session(write=False) as session:
            rows = await session.execute(
                select(Environment.name, func.count())
                .where(Environment.account_id == acc.account_id)
                .group_by(Environment.name)
            )
            return {name: int(count) for name, count in rows}

    assert await with_runtime(settings, stored) == dict.fromkeys(names, 1)
