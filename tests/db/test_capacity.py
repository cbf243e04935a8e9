"""``serve --workers N`` stays under PostgreSQL's connection limit (issue 13, item 6).

With the defaults each process could open 31 connections (a pool of 10, 20
more under load, and its LISTEN connection): ``--workers 4`` reached 124,
past the server's default ``max_connections`` of 100. ``serve`` now reads
the limit at start and gives each worker its share (``db/capacity.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from keyhouse.config import Settings
from keyhouse.db.capacity import PER_PROCESS_EXTRA, read_budget, size_pools
from tests.conftest import pg_plain
from tests.factories import settings_env
from tests.limits.conftest import free_port
from tests.test_cli import expect_one_line_failure, keyhouse_in

ADMIN = "kh_admin_capacity_test_0123456789abcdef"


class TestSizePools:
    def test_what_fits_is_kept(self) -> None:
        sizes = size_pools(budget=97, processes=3, pool_size=10, max_overflow=20)
        assert (sizes.pool_size, sizes.max_overflow, sizes.reduced) == (10, 20, False)
        assert sizes.per_process == 31

    def test_four_workers_on_a_default_server(self) -> None:
        # max_connections 100, 3 reserved, 20 held by others: 77 for keyhouse.
        sizes = size_pools(budget=77, processes=4, pool_size=10, max_overflow=20)
        assert (sizes.pool_size, sizes.max_overflow, sizes.per_process) == (10, 8, 19)
        assert sizes.reduced

    def test_a_small_budget_shrinks_the_pool_first_to_its_share(self) -> None:
        sizes = size_pools(budget=12, processes=4, pool_size=10, max_overflow=20)
        assert (sizes.pool_size, sizes.max_overflow, sizes.per_process) == (2, 0, 3)

    def test_no_pooled_connection_is_a_refusal(self) -> None:
        with pytest.raises(ValueError, match="4 processes need at least 2 each"):
            size_pools(budget=7, processes=4, pool_size=10, max_overflow=20)

    @given(
        budget=st.integers(-50, 2000),
        processes=st.integers(1, 256),
        pool=st.integers(1, 1000),
        overflow=st.integers(0, 1000),
    )
    def test_never_over_the_budget(
        self, budget: int, processes: int, pool: int, overflow: int
    ) -> None:
        try:
            sizes = size_pools(budget, processes, pool, overflow)
        except ValueError:
            assert budget // processes < 1 + PER_PROCESS_EXTRA
            return
        assert processes * sizes.per_process <= budget
        assert 1 <= sizes.pool_size <= pool
        assert 0 <= sizes.max_overflow <= overflow
        assert sizes.reduced == (processes * (pool + overflow + PER_PROCESS_EXTRA) > budget)


@pytest.mark.postgresql_only
async def test_the_budget_is_the_servers_limit_less_reserved_and_in_use(
    settings: Settings,
) -> None:
    budget = await read_budget(settings)
    conn = await asyncpg.connect(pg_plain(settings.database_url))
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        reserved = int(await conn.fetchval("SHOW superuser_reserved_connections"))
    finally:
        await conn.close()
    assert budget.max_connections == limit
    assert budget.reserved >= reserved
    assert budget.connections == limit - budget.reserved - budget.in_use
    fixed = await read_budget(settings.model_copy(update={"db_max_connections": 12}))
    assert fixed.connections == 12


@contextmanager
def serve(
    settings: Settings, workers: int, log: Path, **env: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    environ = {**os.environ, **settings_env(settings), "KEYHOUSE_ADMIN_TOKENS": ADMIN, **env}
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "keyhouse",
                "serve",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()[-2000:]
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


def pool_line(log: Path) -> dict[str, Any]:
    for raw in log.read_text().splitlines():
        line: dict[str, Any] = json.loads(raw)
        if line["event"] == "database_pool":
            return line
    raise AssertionError("no database_pool line")


class Sampler:
    """The most connections to the test's database seen at once, sampled every 10 ms."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()))

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                self.peak = max(self.peak, int(count))
                await asyncio.sleep(0.01)
        finally:
            await conn.close()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


async def _flood(url: str, count: int) -> list[int]:
    admin = {"Authorization": f"Bearer {ADMIN}"}
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        created = await client.post(f"{url}/admin/accounts", headers=admin, json={"name": "A"})
        auth = {"Authorization": f"Bearer {created.json()['key']['key']}"}

        async def one(i: int) -> int:
            resp = await client.post(f"{url}/environments", headers=auth, json={"name": f"e{i}"})
            return resp.status_code

        return await asyncio.gather(*(one(i) for i in range(count)))


@pytest.mark.postgresql_only
def test_four_workers_stay_within_a_budget_under_load(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serve(settings, 4, log, KEYHOUSE_DB_MAX_CONNECTIONS="12") as (url, _):
        line = pool_line(log)
        assert line["level"] == "warning"  # smaller than asked for: said at start
        assert (line["pool_size"], line["max_overflow"], line["connections_per_process"]) == (
            2,
            0,
            3,
        )
        with Sampler(pg_plain(settings.database_url)) as sampler:
            statuses = asyncio.run(_flood(url, 300))
    assert statuses == [201] * 300
    assert 4 <= sampler.peak <= 12, sampler.peak


@pytest.mark.postgresql_only
def test_four_workers_with_the_defaults_fit_the_server(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    with serve(settings, 4, log) as _:
        line = pool_line(log)
    limit = line["server_max_connections"]
    assert line["budget"] <= limit
    assert 4 * line["connections_per_process"] <= line["budget"]
    assert line["pool_size"] >= 1


@pytest.mark.postgresql_only
def test_too_many_workers_for_the_budget_is_one_line(settings: Settings, tmp_path: Path) -> None:
    result = keyhouse_in(
        tmp_path,
        "serve",
        "--port",
        str(free_port()),
        "--workers",
        "4",
        **settings_env(settings),
        KEYHOUSE_DB_MAX_CONNECTIONS="7",
    )
    line = expect_one_line_failure(result)
    assert "4 processes need at least 2 each" in line, line
    assert "KEYHOUSE_DB_MAX_CONNECTIONS" in line, line
