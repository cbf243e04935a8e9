"""Races across real processes: the same moment, two ``keyhouse serve`` on one database.

SQLite serialises writers, so a check-then-act passes there whatever the
code does; on PostgreSQL (READ COMMITTED) two requests both read before
either writes. These helpers send a batch of requests at once, spread over
the processes of ``tests.limits.conftest.served``, and check what every
answer must be: a 2xx, or a 4xx with the seed's envelope, never a 5xx.
Failure messages name statuses and codes only: bodies may hold keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.models import ApiKey, Event
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow

T = TypeVar("T")

Request = tuple[str, str, dict[str, Any]]


async def with_runtime(settings: Settings, work: Callable[[Runtime], Awaitable[T]]) -> T:
    """``work`` with an in-process runtime on ``settings`` (setup before, checks after a race)."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        return await work(runtime)


async def race(
    client: httpx.AsyncClient, urls: list[str], requests: Iterable[Request]
) -> list[httpx.Response]:
    """Send every request at once, the i-th to ``urls[i % len(urls)]``; answers in order."""
    calls = [
        client.request(method, urls[i % len(urls)] + path, **kwargs)
        for i, (method, path, kwargs) in enumerate(requests)
    ]
    return list(await asyncio.gather(*calls))


def codes(responses: Iterable[httpx.Response]) -> list[tuple[int, str | None]]:
    """``(status, error code)`` of each answer, after checking it is no 5xx and has the envelope."""
    __tracebackhide__ = True
    out: list[tuple[int, str | None]] = []
    for response in responses:
        status = response.status_code
        assert status < 500, f"a {status} answer ({response.headers.get('x-tracking-id')})"
        if status >= 400:
            body = response.json()
            assert set(body) == {"trackingId", "error"}, f"{status} without the envelope"
            assert body["trackingId"] == response.headers["x-tracking-id"]
            out.append((status, body["error"]["code"]))
        else:
            out.append((status, None))
    return out


async def active_keys(runtime: Runtime, account_id: str) -> int:
    """Keys of the account in force now, as the database has them."""
    now = utcnow()
    async with runtime.db.session(write=False) as session:
        count = await session.scalar(
            select(func.count()).where(
                ApiKey.account_id == account_id,
                ApiKey.revoked.is_(False),
                (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
            )
        )
    return int(count or 0)


async def events_of(runtime: Runtime, account_id: str, type_: str) -> list[Event]:
    """The account's committed events of ``type_``, oldest first."""
    async with runtime.db.session(write=False) as session:
        result = await session.scalars(
            select(Event)
            .where(Event.account_id == account_id, Event.type == type_)
            .order_by(Event.id)
        )
        return list(result.all())
