"""Production shape: many workers, revocation everywhere, outages survived.

Real processes (``keyhouse serve --workers N``) on the real PostgreSQL; the
database is cut off with a TCP proxy the test controls.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select, text

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from tests.factories import (
    AccountWithKey,
    bearer,
    create_account,
    create_key,
    listener,
    notified,
    settings_env,
)
from tests.limits.conftest import free_port, served
from tests.limits.helpers import account_on_plan
from tests.proxy import tcp_proxy

ADMIN = "scale-out-admin-token-0123456789abcdef"


async def prepared_account(settings: Settings, **limits: int | None) -> AccountWithKey:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        if limits:
            return await account_on_plan(runtime, **limits)
        return await create_account(runtime)


@contextmanager
def serve(
    settings: Settings, workers: int, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environ = {
        **os.environ,
        **settings_env(settings),
        "KEYHOUSE_ADMIN_TOKENS": ADMIN,
        "KEYHOUSE_LOG_LEVEL": "warning",
        **env,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyhouse", "serve", "--port", str(port), "--workers", str(workers)],
        env=environ,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"keyhouse serve exited with {proc.returncode}"
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "keyhouse serve did not start within 60 s"
            time.sleep(0.05)
        yield url, proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


async def one_client_per_worker(url: str, workers: int) -> dict[int, httpx.AsyncClient]:
    """A keep-alive connection to each worker (the kernel spreads new connections)."""
    clients: dict[int, httpx.AsyncClient] = {}
    for _ in range(400):
        client = httpx.AsyncClient(base_url=url, limits=httpx.Limits(max_connections=1))
        pid = (await client.get("/healthz")).json()["pid"]
        if pid in clients:
            await client.aclose()
        else:
            clients[pid] = client
        if len(clients) == workers:
            return clients
    for client in clients.values():
        await client.aclose()
    raise AssertionError(f"reached {len(clients)} of {workers} workers")


async def still_pinned(clients: dict[int, httpx.AsyncClient]) -> bool:
    for pid, client in clients.items():
        if (await client.get("/healthz")).json()["pid"] != pid:
            return False
    return True


@pytest.mark.postgresql_only
async def test_revocation_reaches_every_worker_within_a_second(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    acc = await prepared_account(settings, maxKeys=None)
    # A cache TTL far beyond the bound: only the notification can make it.
    with serve(settings, 4, KEYHOUSE_CACHE_TTL_SECONDS="60") as (url, _):
        clients = await one_client_per_worker(url, 4)
        try:
            delays: list[float] = []
            for _ in range(20):
                made = await clients[next(iter(clients))].post(
                    "/keys", headers=acc.auth, json={"name": "victim", "keyType": "public"}
                )
                assert made.status_code == 201
                victim = bearer(made.json()["key"])
                if not await still_pinned(clients):
                    # An idle keep-alive connection was closed: find the workers again.
                    for client in clients.values():
                        await client.aclose()
                    clients = await one_client_per_worker(url, 4)
                for client in clients.values():
                    warm = await client.get("/keys", headers=victim)
                    assert warm.status_code == 403  # valid key, public: cached as valid
                revoker = list(clients.values())[len(delays) % 4]
                revoked = await revoker.post(f"/keys/{made.json()['id']}/revoke", headers=acc.auth)
                assert revoked.status_code == 200
                start = time.monotonic()

                async def refused(
                    client: httpx.AsyncClient,
                    start: float = start,
                    victim: dict[str, str] = victim,
                ) -> float:
                    while True:
                        resp = await client.get("/keys", headers=victim)
                        if resp.status_code == 401:
                            assert resp.json()["error"]["code"] == "revoked_api_key"
                            return time.monotonic() - start
                        if time.monotonic() - start > 2:
                            return 2.0
                        await asyncio.sleep(0.005)

                delays.append(max(await asyncio.gather(*(refused(c) for c in clients.values()))))
        finally:
            for client in clients.values():
                await client.aclose()
    assert max(delays) <= 1.0, f"slowest propagation {max(delays):.3f} s"


@pytest.mark.postgresql_only
async def test_a_reconnecting_listener_clears_the_cache(
    make_settings: Callable[..., Settings],
) -> None:
    app = create_app(make_settings(cache_ttl_seconds=60))
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        change_listener = listener(runtime)
        await asyncio.wait_for(change_listener.connected.wait(), 10)
        before = change_listener.notifications
        acc = await create_account(runtime)
        await notified(runtime, before)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/keys", headers=acc.auth)).status_code == 200
            assert len(runtime.cache) > 0
            # Cut the listener's connection from the server side.
            async with runtime.db.session(write=True) as session:
                await session.execute(
                    text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = 'keyhouse-listen' "
                        "AND datname = current_database()"
                    )
                )
            for _ in range(500):
                if not change_listener.connected.is_set():
                    break
                await asyncio.sleep(0.01)
            await asyncio.wait_for(change_listener.connected.wait(), 10)
            assert len(runtime.cache) == 0


@pytest.mark.postgresql_only
async def test_database_outage_gives_503_then_recovers(
    make_settings: Callable[..., Settings], pg_url: str
) -> None:
    from sqlalchemy import make_url

    real = make_url(pg_url)
    async with tcp_proxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(
            hide_password=False
        )
        # No cache: every request needs the database.
        app = create_app(make_settings(database_url=via_proxy, cache_ttl_seconds=0))
        async with app.router.lifespan_context(app):
            acc = await create_account(app.state.runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/keys", headers=acc.auth)).status_code == 200
                proxy.cut()
                for path in ["/keys", "/keys", "/environments"]:
                    start = time.monotonic()
                    resp = await client.get(path, headers=acc.auth)
                    took = time.monotonic() - start
                    assert resp.status_code == 503
                    assert resp.json()["error"]["code"] == "service_unavailable"
                    assert resp.headers["retry-after"] == "2"
                    assert took <= 2.5, f"503 after {took:.2f} s"
                verify = await client.post(
                    "/verify",
                    headers=bearer(app.state.runtime.admin_tokens.first),
                    json={"key": acc.key},
                )
                assert verify.status_code == 503
                assert (await client.get("/readyz")).status_code == 503
                await proxy.start()
                back = time.monotonic()
                while (await client.get("/keys", headers=acc.auth)).status_code != 200:
                    assert time.monotonic() - back <= 5, "not back within 5 s"
                    await asyncio.sleep(0.05)


async def test_500_parallel_creates_give_500_distinct_keys(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    acc = await account_on_plan(runtime, maxKeys=None)
    responses = await asyncio.gather(
        *(
            client.post("/keys", headers=acc.auth, json={"name": f"k{i}", "keyType": "public"})
            for i in range(500)
        )
    )
    assert Counter(r.status_code for r in responses) == {201: 500}
    assert len({r.json()["id"] for r in responses}) == 500
    assert len({r.json()["key"] for r in responses}) == 500
    listed = (await client.get("/keys", headers=acc.auth)).json()["keys"]
    assert len(listed) == 501


@pytest.mark.postgresql_only
async def test_sigkill_of_a_worker_loses_no_acknowledged_write(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    acc = await prepared_account(settings, maxKeys=None)
    acknowledged: list[str] = []
    with serve(settings, 2) as (url, _):
        clients = await one_client_per_worker(url, 2)
        victim_pid = next(iter(clients))
        stop = asyncio.Event()

        async def writer(n: int) -> None:
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        resp = await client.post(
                            "/keys",
                            headers=acc.auth,
                            json={"name": f"w{n}-{i}", "keyType": "public"},
                        )
                    except httpx.TransportError:
                        continue  # not acknowledged: may or may not be stored
                    if resp.status_code == 201:
                        acknowledged.append(resp.json()["id"])

        tasks = [asyncio.create_task(writer(n)) for n in range(8)]
        while len(acknowledged) < 50:  # noqa: ASYNC110 (polling the writers' progress)
            await asyncio.sleep(0.01)
        os.kill(victim_pid, signal.SIGKILL)
        count_at_kill = len(acknowledged)
        while len(acknowledged) < count_at_kill + 50:  # noqa: ASYNC110
            await asyncio.sleep(0.01)
        stop.set()
        await asyncio.gather(*tasks)
        for client in clients.values():
            await client.aclose()
    app = create_app(settings)
    async with (
        app.router.lifespan_context(app),
        app.state.runtime.db.session(write=False) as session,
    ):
        stored = set((await session.execute(select(ApiKey.id))).scalars())
    missing = [key_id for key_id in acknowledged if key_id not in stored]
    assert not missing, f"{len(missing)} acknowledged creates were lost"


async def test_two_keys_revoking_each_other_at_once_leave_one(
    make_settings: Callable[..., Settings],
) -> None:
    """The last-secret-key guard across two processes: A revokes B while B revokes A.

    Each pair is sent at the same moment, one request to each process; one
    must win and the other get 409 last_secret_key, or the account is
    locked out of its own API. On PostgreSQL this raced (13 of 15 accounts
    lost both keys) until the revoke took the account's row lock.
    """
    settings = make_settings()
    pairs: list[tuple[AccountWithKey, str, str]] = []
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        runtime: Runtime = app.state.runtime
        for _ in range(12):
            acc = await create_account(runtime)
            second = await create_key(runtime, acc.account_id)
            pairs.append((acc, second.row.id, second.plaintext))
    with served(settings, 2) as urls:
        async with httpx.AsyncClient(timeout=30) as client:

            async def race(acc: AccountWithKey, other_id: str, other_key: str) -> list[int]:
                answers = await asyncio.gather(
                    client.post(f"{urls[0]}/keys/{other_id}/revoke", headers=acc.auth),
                    client.post(f"{urls[1]}/keys/{acc.key_id}/revoke", headers=bearer(other_key)),
                )
                for answer in answers:
                    if answer.status_code == 409:
                        assert answer.json()["error"]["code"] == "last_secret_key"
                    if answer.status_code == 401:
                        # It authenticated after the other's revoke committed:
                        # refused as revoked, which leaves one key too.
                        assert answer.json()["error"]["code"] == "revoked_api_key"
                return sorted(a.status_code for a in answers)

            results = await asyncio.gather(*(race(*pair) for pair in pairs))
    # One wins; never both (the account would be left with no secret key).
    assert all(result in ([200, 409], [200, 401]) for result in results), results
