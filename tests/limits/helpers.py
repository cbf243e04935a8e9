"""Shared setup for the limits tests."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from keyhouse.accounts.schemas import LimitsUpdate
from keyhouse.accounts.service import AccountService
from keyhouse.app import create_app
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.db.engine import Database
from keyhouse.limits.plan import current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import AccountWithKey, create_account


async def account_on_plan(runtime: Runtime, **limits: Any) -> AccountWithKey:
    """An account (and its first secret key) with the given plan limits."""
    acc = await create_account(runtime)
    async with runtime.db.session(write=True) as session:
        await AccountService(session, runtime).update(
            acc.account_id, limits=LimitsUpdate(**limits), actor=CLI
        )
    runtime.cache.clear()
    return acc


async def prepared(settings: Settings, **limits: Any) -> AccountWithKey:
    """An account on a plan, made by an app that is then shut down."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        return await account_on_plan(app.state.runtime, **limits)


async def stored_usage(settings: Settings, account_id: str) -> int:
    """The account's usage this period as saved in the database (what it is billed)."""
    db = Database(settings)
    try:
        async with db.session(write=False) as session:
            return await UsageRepository(session, is_sqlite=db.is_sqlite).get(
                account_id, current_period(utcnow()).key
            )
    finally:
        await db.dispose()


async def until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


async def counting_in_redis(client: httpx.AsyncClient, urls: list[str]) -> bool:
    """Whether every server counts in Redis again (its /readyz says so)."""
    for url in urls:
        ready = await client.get(f"{url}/readyz")
        if ready.status_code != 200 or ready.json().get("redis") != "ok":
            return False
    return True


async def calls(
    client: httpx.AsyncClient,
    urls: list[str],
    acc: AccountWithKey,
    count: int,
    *,
    at_once: int = 8,
    path: str = "/keys",
) -> Counter[int]:
    """``count`` metered calls spread over ``urls``, ``at_once`` at a time; their statuses."""
    gate = asyncio.Semaphore(at_once)

    async def one(i: int) -> int:
        async with gate:
            return (await client.get(f"{urls[i % len(urls)]}{path}", headers=acc.auth)).status_code

    return Counter(await asyncio.gather(*(one(i) for i in range(count))))
