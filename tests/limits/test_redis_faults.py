"""Quotas through Redis faults, across real processes (issue 12, part B).

Two ``keyhouse serve`` processes on PostgreSQL share a private
``redis-server`` that the tests pause (CLIENT PAUSE), and stop and start
again empty (SHUTDOWN NOSAVE): the machine's Redis is never touched. What
each test asserts is what README's "Limits" promises: at most the plan
(exactly, where nothing was unsaved when Redis faltered), and usage as
billed equal to the requests served.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx
import pytest

from keyhouse.config import Settings
from tests.limits.conftest import PrivateRedis, served
from tests.limits.helpers import calls, counting_in_redis, prepared, stored_usage, until

pytestmark = pytest.mark.postgresql_only


async def test_a_pause_in_the_middle_admits_exactly_the_plan(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis
) -> None:
    # The run: 50 calls, Redis paused, 30 calls, then 50: 130 admitted
    # on a plan of 100, as the 30 counted in the database never reached Redis.
    settings = make_settings()
    acc = await prepared(settings, monthlyRequests=100)
    env = {"KEYHOUSE_REDIS_URL": private_redis.url, "KEYHOUSE_USAGE_FLUSH_SECONDS": "0.2"}
    with served(settings, 2, **env) as urls:
        async with httpx.AsyncClient(timeout=30) as client:
            assert await calls(client, urls, acc, 50) == {200: 50}

            async def saved() -> bool:
                return await stored_usage(settings, acc.account_id) == 50

            await until(saved, "the 50 calls are saved")
            private_redis.pause(4000)
            assert await calls(client, urls, acc, 30) == {200: 30}
            for url in urls:  # both counted in the database meanwhile
                ready = (await client.get(f"{url}/readyz")).json()
                assert ready["redis"].startswith("unavailable")

            async def back() -> bool:
                return await counting_in_redis(client, urls)

            await until(back, "both servers count in Redis again")
            assert await calls(client, urls, acc, 50) == {200: 20, 402: 30}
    assert await stored_usage(settings, acc.account_id) == 100


async def test_an_outage_admits_at_most_the_counts_other_processes_had_not_saved(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis
) -> None:
    # The bound README states: server B admitted 40 through Redis and saves
    # them only every 30 s or when it sees Redis fail; server A, counting in
    # the database meanwhile, may not see them yet. At most 100 + 40.
    settings = make_settings()
    acc = await prepared(settings, monthlyRequests=100)
    env = {"KEYHOUSE_REDIS_URL": private_redis.url, "KEYHOUSE_USAGE_FLUSH_SECONDS": "30"}
    with served(settings, 2, **env) as urls:
        a, b = urls
        async with httpx.AsyncClient(timeout=30) as client:
            assert await calls(client, [a], acc, 40) == {200: 40}
            assert await calls(client, [b], acc, 40) == {200: 40}
            private_redis.pause(3000)
            during = await calls(client, [a], acc, 60)
            assert 20 <= during[200] <= 20 + 40
            assert during[200] + during[402] == 60

            async def back() -> bool:
                return await counting_in_redis(client, urls)

            await until(back, "both servers count in Redis again")
            # What A admitted in the database was added to Redis's count.
            assert await calls(client, urls, acc, 20) == {402: 20}
    assert await stored_usage(settings, acc.account_id) == 80 + during[200]


async def test_redis_restarted_empty_admits_exactly_the_plan(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis
) -> None:
    # The run: quota 300, 200 used, Redis restarted without its data,
    # then 550 admitted in all. Here 200 are unsaved (30 s flushes) when the
    # counter is lost: it is made again from the database and each server's
    # unsaved counts.
    settings = make_settings()
    acc = await prepared(settings, monthlyRequests=300)
    env = {"KEYHOUSE_REDIS_URL": private_redis.url, "KEYHOUSE_USAGE_FLUSH_SECONDS": "30"}
    with served(settings, 2, **env) as urls:
        async with httpx.AsyncClient(timeout=30) as client:
            assert await calls(client, urls, acc, 200, at_once=4) == {200: 200}
            private_redis.restart_empty()
            assert await calls(client, urls, acc, 200, at_once=4) == {200: 100, 402: 100}
    assert await stored_usage(settings, acc.account_id) == 300


async def test_usage_of_an_account_without_quota_is_what_was_served(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis
) -> None:
    # Recorded usage fell ~30% short for accounts without a quota: Redis's
    # count was copied over the database's (a max), erasing what was counted
    # elsewhere. Now every server saves what it served, and nothing else.
    settings = make_settings()
    acc = await prepared(settings)
    env = {"KEYHOUSE_REDIS_URL": private_redis.url, "KEYHOUSE_USAGE_FLUSH_SECONDS": "0.5"}
    served_ok = 0
    with served(settings, 2, **env) as urls:
        async with httpx.AsyncClient(timeout=30) as client:
            served_ok += (await calls(client, urls, acc, 60))[200]
            private_redis.pause(1500)
            served_ok += (await calls(client, urls, acc, 40))[200]
            private_redis.restart_empty()
            served_ok += (await calls(client, urls, acc, 40))[200]
            assert served_ok == 140

            async def live_count_exact() -> bool:
                # Redis's count, rebuilt after the restart, once every server
                # counts there again and has saved what it counted meanwhile.
                if not await counting_in_redis(client, urls):
                    return False
                mine = (await client.get(f"{urls[0]}/account", headers=acc.auth)).json()
                requests: int = mine["usage"]["requests"]
                assert requests <= 140
                return requests == 140

            await until(live_count_exact, "GET /account shows the 140 requests served")
    assert await stored_usage(settings, acc.account_id) == 140


async def test_short_pauses_over_and_over_admit_exactly_the_plan(
    make_settings: Callable[..., Settings], private_redis: PrivateRedis
) -> None:
    # The run: Redis paused 400 ms every 1.5 s; an 8,000 quota
    # admitted 15,016. A pause shorter than the second attempt's timeout
    # (1 s) is waited out: each request is counted once, in Redis.
    settings = make_settings()
    acc = await prepared(settings, monthlyRequests=300)
    stop = threading.Event()

    def pauses() -> None:
        while not stop.wait(1.1):
            private_redis.pause(400)

    env = {"KEYHOUSE_REDIS_URL": private_redis.url}
    with served(settings, 2, **env) as urls:
        pauser = threading.Thread(target=pauses)
        pauser.start()
        try:
            async with httpx.AsyncClient(timeout=30) as client:
                statuses = await calls(client, urls, acc, 500)
        finally:
            stop.set()
            pauser.join()
    assert statuses == {200: 300, 402: 200}
    assert await stored_usage(settings, acc.account_id) == 300
