"""A change of a key's scopes or restrictions reaches every worker (issue 15 item 6).

As revocation does (tests/test_scale_out.py, whose helpers these reuse): on
PostgreSQL within a second, by the key's NOTIFY, with a cache TTL far beyond
that; on SQLite within the cache TTL. And under load: while two workers use a
key, no request sent a second after its narrowing answered gets through with
the old scope.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import httpx
import pytest

from keyhouse.config import Settings
from tests.factories import bearer
from tests.limits.conftest import served
from tests.test_scale_out import ADMIN, one_client_per_worker, prepared_account, serve, still_pinned

BOTH = {"scopes": ["keys:read", "keys:write"]}
NARROWED = {"scopes": ["keys:write"]}


async def refused_everywhere(
    clients: list[httpx.AsyncClient], auth: dict[str, str], start: float, within: float
) -> float:
    """Seconds from ``start`` until every client's GET /keys with ``auth`` is 403
    insufficient_scope (``within`` + 1 when one never is)."""

    async def refused(client: httpx.AsyncClient) -> float:
        while True:
            resp = await client.get("/keys", headers=auth)
            if resp.status_code == 403:
                assert resp.json()["error"]["code"] == "insufficient_scope"
                return time.monotonic() - start
            assert resp.status_code == 200, resp.text
            if time.monotonic() - start > within:
                return within + 1
            await asyncio.sleep(0.005)

    return max(await asyncio.gather(*(refused(c) for c in clients)))


@pytest.mark.postgresql_only
async def test_a_narrowing_reaches_every_worker_within_a_second(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    acc = await prepared_account(settings, maxKeys=None)
    # A cache TTL far beyond the bound: only the notification can make it.
    with serve(settings, 4, KEYHOUSE_CACHE_TTL_SECONDS="60") as (url, _):
        clients = await one_client_per_worker(url, 4)
        try:
            delays: list[float] = []
            for _ in range(10):
                first = clients[next(iter(clients))]
                made = await first.post(
                    "/keys",
                    headers=acc.auth,
                    json={"name": "narrowed", "keyType": "secret", **BOTH},
                )
                assert made.status_code == 201
                auth = bearer(made.json()["key"])
                if not await still_pinned(clients):
                    for client in clients.values():
                        await client.aclose()
                    clients = await one_client_per_worker(url, 4)
                for client in clients.values():
                    warm = await client.get("/keys", headers=auth)
                    assert warm.status_code == 200  # cached with keys:read
                patcher = list(clients.values())[len(delays) % 4]
                patched = await patcher.patch(
                    f"/keys/{made.json()['id']}", headers=acc.auth, json=NARROWED
                )
                assert patched.status_code == 200
                start = time.monotonic()
                delays.append(await refused_everywhere(list(clients.values()), auth, start, 2))
        finally:
            for client in clients.values():
                await client.aclose()
    assert max(delays) <= 1.0, f"slowest propagation {max(delays):.3f} s"


@pytest.mark.sqlite_only
async def test_on_sqlite_within_the_cache_ttl(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    acc = await prepared_account(settings, maxKeys=None)
    with served(settings, 2, KEYHOUSE_ADMIN_TOKENS=ADMIN, KEYHOUSE_CACHE_TTL_SECONDS="1") as urls:
        clients = [httpx.AsyncClient(base_url=url, timeout=10) for url in urls]
        try:
            made = await clients[0].post(
                "/keys", headers=acc.auth, json={"name": "narrowed", "keyType": "secret", **BOTH}
            )
            assert made.status_code == 201
            auth = bearer(made.json()["key"])
            for client in clients:
                assert (await client.get("/keys", headers=auth)).status_code == 200
            patched = await clients[1].patch(
                f"/keys/{made.json()['id']}", headers=acc.auth, json=NARROWED
            )
            assert patched.status_code == 200
            delay = await refused_everywhere(clients, auth, time.monotonic(), 3)
        finally:
            for client in clients:
                await client.aclose()
    # The TTL (1 s), plus the time a request takes on a loaded machine.
    assert delay <= 1.5, f"propagation took {delay:.3f} s"


@pytest.mark.postgresql_only
async def test_no_request_passes_with_the_old_scope_a_second_after_the_narrowing(
    make_settings: Callable[..., Settings],
) -> None:
    """Two workers use the key without pause (the account API and POST /verify) while
    it is narrowed: every request sent from the PATCH's answer + 1 s on is refused."""
    settings = make_settings()
    acc = await prepared_account(settings, maxKeys=None)
    with serve(settings, 2, KEYHOUSE_CACHE_TTL_SECONDS="60") as (url, _):
        clients = await one_client_per_worker(url, 2)
        try:
            made = await clients[next(iter(clients))].post(
                "/keys", headers=acc.auth, json={"name": "busy", "keyType": "secret", **BOTH}
            )
            assert made.status_code == 201
            key = made.json()["key"]
            auth = bearer(key)
            answered: list[float] = []
            passed: list[float] = []  # when each request that passed was sent
            sent_times: list[float] = []  # when each request was sent
            stop = asyncio.Event()

            async def use(client: httpx.AsyncClient, verify: bool) -> None:
                while not stop.is_set():
                    sent = time.monotonic()
                    sent_times.append(sent)
                    if verify:
                        resp = await client.post(
                            "/verify",
                            headers=bearer(ADMIN),
                            json={"key": key, "scopes": ["keys:read"]},
                        )
                        assert resp.status_code == 200, resp.text
                        ok = resp.json()["code"] == "valid"
                        if not ok:
                            assert resp.json()["code"] == "insufficient_scope"
                    else:
                        resp = await client.get("/keys", headers=auth)
                        assert resp.status_code in (200, 403), resp.text
                        ok = resp.status_code == 200
                    if ok:
                        passed.append(sent)

            users = [
                asyncio.create_task(use(client, verify))
                for client in clients.values()
                for verify in (False, True)
            ]
            while len(passed) < 40:  # noqa: ASYNC110 (polling the users' progress)
                await asyncio.sleep(0.01)
            async with httpx.AsyncClient(base_url=url) as patcher:
                patched = await patcher.patch(
                    f"/keys/{made.json()['id']}", headers=acc.auth, json=NARROWED
                )
            answered.append(time.monotonic())
            assert patched.status_code == 200
            # Use past the bound: 40 more requests sent after it.
            bound = answered[0] + 1.0
            while sum(1 for t in sent_times if t > bound) < 40:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            stop.set()
            await asyncio.gather(*users)
        finally:
            for client in clients.values():
                await client.aclose()
    late = [sent - answered[0] for sent in passed if sent > answered[0] + 1.0]
    assert not late, (
        f"{len(late)} requests passed with the old scope, sent up to {max(late):.3f} s after"
    )
    assert any(sent < answered[0] for sent in passed), "the key was never used before"
