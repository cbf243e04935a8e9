"""In-process measurements for ``make bench`` (run by bench/run.py, one subprocess each).

Settings come from the environment (``KEYHOUSE_DATA_DIR`` etc., set by run.py)
plus the overrides named below. Every phase prints one JSON object on stdout;
nothing here prints a key string (keys go to a 0600 file in the data dir).

Phases:
  setup --sizes 1,200,... --out F   migrate, create one account per size with
                                    that many keys (one transaction per
                                    account), write {size: {accountId, key}} to F
  verify --runs R                   Verifier.verify per second: cache hit,
                                    cache miss (cache off: TTL 0), malformed key
  verify-pg --runs R --keys N       Verifier.verify with the cache off on
                                    PostgreSQL (--server): CPU and wall time per
                                    miss, on a database made for it and dropped
  last-used --runs R ...            lastUsedAt rows written while N verifications
                                    of K keys run for D seconds with the flush
                                    loop (LastUsed.run) running every I seconds
  rss --keys N                      peak RSS of a process holding the app and a
                                    key cache filled with N records
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import gc
import json
import os
import resource
import secrets
import statistics
import sys
import time
from typing import Any

from keyhouse.accounts.service import AccountService
from keyhouse.audit.service import CLI
from keyhouse.config import Settings
from keyhouse.db.migrate import migrate
from keyhouse.keys.service import KeyService
from keyhouse.keys.verify import Verifier
from keyhouse.limits.plan import Plan
from keyhouse.runtime import Runtime


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def settings(**overrides: Any) -> Settings:
    # No plan limit on the bench accounts (10,000 keys in one account).
    overrides.setdefault("default_max_keys", None)
    return Settings(**overrides)


async def create_account_with_keys(
    runtime: Runtime, name: str, count: int
) -> tuple[str, list[str]]:
    """An account with ``count`` secret keys (its first key included), in one transaction."""
    async with runtime.db.session(write=True) as session:
        new = await AccountService(session, runtime).create(name, actor=CLI)
        keys = [new.key.plaintext]
        service = KeyService(session, runtime)
        for i in range(count - 1):
            issued = await service.create(
                new.account.id, name=f"bench key {i + 2}", key_type="secret", actor=CLI
            )
            keys.append(issued.plaintext)
    return new.account.id, keys


# Issue 15's bench case: a key with 3 scopes and a 10-CIDR allowlist, verified
# with a required scope and an address in the last CIDR (every CIDR is tried).
RESTRICTED_SCOPES = ["domains:read", "messages:read", "messages:send"]
RESTRICTED_CIDRS = [f"198.51.{i}.0/24" for i in range(9)] + ["203.0.113.0/24"]
RESTRICTED_VERIFY = {"scopes": ["messages:send"], "ip": "203.0.113.7"}


async def create_restricted_key(runtime: Runtime) -> dict[str, Any]:
    """The scope catalog and a restricted key in an account of its own (the others'
    key counts stay as the listing figures need); what /verify is sent with it.

    The key's scopes and restrictions are written to its row as the key
    service stores them (validated by keys/restrictions.py): what is measured
    is their verification, whichever way they were set.
    """
    from sqlalchemy import update

    from keyhouse.keys.crypto import hash_key
    from keyhouse.keys.restrictions import parse_restrictions, parse_scopes
    from keyhouse.models import ApiKey
    from keyhouse.scopes.service import Entry, ScopeService

    _, keys = await create_account_with_keys(runtime, "bench restricted", 2)
    restrictions = parse_restrictions(
        {"ipAllowlist": RESTRICTED_CIDRS}, key_type="secret", attribute_catalog=()
    )
    assert restrictions is not None
    async with runtime.db.session(write=True) as session:
        await ScopeService(session).replace(
            [Entry(name, "bench") for name in RESTRICTED_SCOPES], [], actor=CLI
        )
        await session.execute(
            update(ApiKey)
            .where(ApiKey.key_hash == hash_key(keys[1]))
            .values(
                scopes=list(parse_scopes(RESTRICTED_SCOPES, RESTRICTED_SCOPES)),
                restrictions=restrictions.to_json(),
            )
        )
    return {"key": keys[1], "verify": RESTRICTED_VERIFY}


def malformed(key: str) -> str:
    """The key with its last checksum character changed: fails the checksum."""
    last = key[-1]
    return key[:-1] + ("A" if last != "A" else "B")


# -- setup ----------------------------------------------------------------------------


async def phase_setup(args: argparse.Namespace) -> None:
    s = settings()
    await migrate(s)
    runtime = Runtime.build(s)
    out: dict[str, Any] = {}
    timings: dict[str, float] = {}
    try:
        for size in args.sizes:
            t0 = time.perf_counter()
            account_id, keys = await create_account_with_keys(runtime, f"bench {size} keys", size)
            timings[str(size)] = round(time.perf_counter() - t0, 2)
            out[str(size)] = {"accountId": account_id, "key": keys[0]}
        out["restricted"] = await create_restricted_key(runtime)
    finally:
        await runtime.close()
    fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(out, fh)
    emit({"phase": "setup", "seconds_per_account": timings})


# -- verification rates ---------------------------------------------------------------


async def timed_rate(verifier: Verifier, keys: list[str], calls: int, runs: int) -> list[float]:
    n = len(keys)
    rates = []
    for _ in range(runs):
        t0 = time.perf_counter()
        for i in range(calls):
            await verifier.verify(keys[i % n])
        rates.append(calls / (time.perf_counter() - t0))
    return rates


def rate_record(rates: list[float], calls: int, note: str) -> dict[str, Any]:
    med = statistics.median(rates)
    return {
        "median_per_s": round(med, 1),
        "runs_per_s": [round(r, 1) for r in rates],
        "calls_per_run": calls,
        "us_per_op": round(1e6 / med, 2),
        "note": note,
    }


async def phase_verify(args: argparse.Namespace) -> None:
    base = settings()
    await migrate(base)
    results: dict[str, Any] = {}

    # Cache hit: TTL at its maximum (60 s) so no entry expires during a run.
    runtime = Runtime.build(settings(cache_ttl_seconds=60))
    try:
        _, keys = await create_account_with_keys(runtime, "verify", args.keys)
        verifier = Verifier(runtime)
        for key in keys:  # warm the cache
            assert (await verifier.verify(key)).code == "valid"
        misses = runtime.cache.misses
        verdict = await verifier.verify(keys[0])
        assert verdict.code == "valid", verdict
        rates = await timed_rate(verifier, keys, args.hit_calls, args.runs)
        assert runtime.cache.misses == misses, "cache-hit runs missed the cache"
        results["cache_hit"] = rate_record(
            rates, args.hit_calls, f"{args.keys} valid keys cycled, all in the cache"
        )

        bad = [malformed(k) for k in keys]
        assert (await verifier.verify(bad[0])).code == "malformed"
        rates = await timed_rate(verifier, bad, args.hit_calls, args.runs)
        results["malformed"] = rate_record(
            rates, args.hit_calls, "checksum fails: no hash, no cache, no database"
        )
    finally:
        await runtime.close()

    # Cache miss: the cache off (TTL 0), every verification reads SQLite.
    runtime = Runtime.build(settings(cache_ttl_seconds=0))
    try:
        verifier = Verifier(runtime)
        assert (await verifier.verify(keys[0])).code == "valid"
        rates = await timed_rate(verifier, keys, args.miss_calls, args.runs)
        assert len(runtime.cache) == 0
        assert runtime.cache.hits == 0
        results["cache_miss"] = rate_record(
            rates, args.miss_calls, "cache off (TTL 0): one SQLite SELECT by hash each"
        )
    finally:
        await runtime.close()
    emit({"phase": "verify", "keys": args.keys, **results})


# -- cache miss on PostgreSQL ---------------------------------------------------------


async def pg_execute(url: str, *statements: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=5)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def phase_verify_pg(args: argparse.Namespace) -> None:
    """CPU per cache miss: what this process spends to verify a key PostgreSQL has.

    CPU time (``time.process_time``), not the wall clock, is the figure: the
    machine runs PostgreSQL too, whose share the wall clock would add in.
    """
    name = f"keyhouse_bench_{os.getpid()}_{secrets.token_hex(4)}"
    await pg_execute(args.server, f'CREATE DATABASE "{name}"')
    url = args.server.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://", 1)
    try:
        # With a database URL keyhouse generates no encryption key: one is given.
        s = settings(
            database_url=f"{url}/{name}",
            cache_ttl_seconds=0,
            encryption_keys=f"bench:{base64.b64encode(os.urandom(32)).decode()}",
        )
        await migrate(s)
        runtime = Runtime.build(s)
        try:
            t0 = time.perf_counter()
            _, keys = await create_account_with_keys(runtime, "verify pg", args.keys)
            setup_s = time.perf_counter() - t0
            verifier = Verifier(runtime)
            # Keys in creation order: their hashes, so the index lookups, are random.
            for key in keys[:200]:  # warm up: pool, compiled statements
                assert (await verifier.verify(key)).code == "valid"
            cpu_us: list[float] = []
            wall_us: list[float] = []
            for run in range(args.runs):
                chosen = [keys[(run * args.calls + i) % len(keys)] for i in range(args.calls)]
                t0, c0 = time.perf_counter(), time.process_time()
                for key in chosen:
                    await verifier.verify(key)
                cpu_us.append((time.process_time() - c0) / args.calls * 1e6)
                wall_us.append((time.perf_counter() - t0) / args.calls * 1e6)
            assert runtime.cache.hits == 0
            assert len(runtime.cache) == 0
        finally:
            await runtime.close()
    finally:
        await pg_execute(args.server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    emit(
        {
            "phase": "verify-pg",
            "keys": args.keys,
            "calls_per_run": args.calls,
            "setup_s": round(setup_s, 1),
            "cpu_us_per_miss": round(statistics.median(cpu_us), 1),
            "runs_cpu_us_per_miss": [round(c, 1) for c in cpu_us],
            "wall_us_per_miss": round(statistics.median(wall_us), 1),
            "runs_wall_us_per_miss": [round(w, 1) for w in wall_us],
            "note": "cache off (TTL 0): one PostgreSQL SELECT by hash each, CPU of this process",
        }
    )


# -- lastUsedAt writes ----------------------------------------------------------------


async def last_used_run(args: argparse.Namespace, keys: list[str]) -> dict[str, Any]:
    runtime = Runtime.build(settings(last_used_flush_seconds=args.interval))
    verifier = Verifier(runtime)
    batches = max(1, args.duration_s * 100)  # one batch every 10 ms
    per_batch = -(-args.verifications // batches)
    done = 0
    valid = 0
    try:
        flusher = asyncio.create_task(runtime.last_used.run(runtime.db, args.interval))
        t0 = time.perf_counter()
        for b in range(batches):
            for _ in range(min(per_batch, args.verifications - done)):
                verdict = await verifier.verify(keys[done % len(keys)])
                valid += verdict.code == "valid"
                done += 1
            # Pace the traffic over the duration; the flush loop runs meanwhile.
            delay = t0 + (b + 1) * args.duration_s / batches - time.perf_counter()
            await asyncio.sleep(max(0.0, delay))
        duration = time.perf_counter() - t0
        during = runtime.last_used.rows_written
        flushes = runtime.last_used.flushes
        flusher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flusher
    finally:
        await runtime.close()  # writes what is pending (the shutdown flush)
    return {
        "verifications": done,
        "valid": valid,
        "duration_s": round(duration, 3),
        "rows_written": during,
        "flushes": flushes,
        "rows_at_shutdown": runtime.last_used.rows_written - during,
        "goal_max_rows": round(len(keys) * duration / args.interval, 1),
    }


async def phase_last_used(args: argparse.Namespace) -> None:
    base = settings()
    await migrate(base)
    runtime = Runtime.build(base)
    try:
        _, keys = await create_account_with_keys(runtime, "last used", args.keys)
    finally:
        await runtime.close()
    runs = [await last_used_run(args, keys) for _ in range(args.runs)]
    # Every key's lastUsedAt reached the database.
    from sqlalchemy import func, select

    from keyhouse.models import ApiKey

    runtime = Runtime.build(base)
    try:
        async with runtime.db.session(write=False) as session:
            written = (
                await session.execute(
                    select(func.count()).select_from(ApiKey).where(ApiKey.last_used_at.is_not(None))
                )
            ).scalar_one()
    finally:
        await runtime.close()
    emit(
        {
            "phase": "last-used",
            "keys": args.keys,
            "interval_s": args.interval,
            "runs": runs,
            "keys_with_last_used_in_db": written,
            "median_rows_written": statistics.median(r["rows_written"] for r in runs),
            "median_goal_max_rows": statistics.median(r["goal_max_rows"] for r in runs),
        }
    )


# -- peak RSS with a full cache -------------------------------------------------------


def proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return -1


async def phase_rss(args: argparse.Namespace) -> None:
    import uvicorn  # noqa: F401  (a worker has it loaded)

    from keyhouse.app import create_app
    from keyhouse.ids import new_id
    from keyhouse.keys.crypto import hash_key
    from keyhouse.keys.verify import KeyRecord

    s = settings(cache_ttl_seconds=60, cache_max_entries=max(args.keys, 100_000))
    await migrate(s)
    create_app(s)  # what a worker imports and builds
    runtime = Runtime.build(s)
    gc.collect()
    baseline_kib = proc_status_kib("VmRSS")
    cache = runtime.cache
    key_format = runtime.key_format
    t0 = time.perf_counter()
    for i in range(args.keys):
        key = key_format.generate("secret")
        # Fields as find_record makes them from a row: a string object each.
        record = KeyRecord(
            id=new_id("key")[0],
            account_id=new_id("acc")[0],
            environment_id=None,
            key_type="secret",
            name=f"bench key {i}",
            revoked=False,
            expires_at=None,
            expiry_recorded=False,
            plan=Plan(),
        )
        cache.put(hash_key(key), record)
    fill_s = time.perf_counter() - t0
    assert len(cache) == args.keys, len(cache)
    gc.collect()
    rss_kib = proc_status_kib("VmRSS")
    hwm_kib = proc_status_kib("VmHWM")
    maxrss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    await runtime.close()
    emit(
        {
            "phase": "rss",
            "keys_cached": len(cache),
            "baseline_rss_mib": round(baseline_kib / 1024, 1),
            "rss_mib": round(rss_kib / 1024, 1),
            "vm_hwm_mib": round(hwm_kib / 1024, 1),
            "ru_maxrss_mib": round(maxrss_kib / 1024, 1),
            "bytes_per_entry": round((rss_kib - baseline_kib) * 1024 / args.keys),
            "fill_s": round(fill_s, 2),
        }
    )


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="phase", required=True)
    st = sub.add_parser("setup")
    st.add_argument("--sizes", type=lambda v: [int(x) for x in v.split(",")], required=True)
    st.add_argument("--out", required=True)
    v = sub.add_parser("verify")
    v.add_argument("--runs", type=int, default=3)
    v.add_argument("--keys", type=int, default=100)
    v.add_argument("--hit-calls", type=int, default=200_000)
    v.add_argument("--miss-calls", type=int, default=3_000)
    vp = sub.add_parser("verify-pg")
    vp.add_argument("--runs", type=int, default=3)
    vp.add_argument("--keys", type=int, default=10_000)
    vp.add_argument("--calls", type=int, default=2_000)
    vp.add_argument("--server", default="postgresql://postgres@127.0.0.1:5432/postgres")
    lu = sub.add_parser("last-used")
    lu.add_argument("--runs", type=int, default=3)
    lu.add_argument("--keys", type=int, default=10)
    lu.add_argument("--verifications", type=int, default=100_000)
    lu.add_argument("--duration-s", type=int, default=5)
    lu.add_argument("--interval", type=float, default=1.0)
    r = sub.add_parser("rss")
    r.add_argument("--keys", type=int, default=100_000)
    args = p.parse_args()
    phases = {
        "setup": phase_setup,
        "verify": phase_verify,
        "verify-pg": phase_verify_pg,
        "last-used": phase_last_used,
        "rss": phase_rss,
    }
    asyncio.run(phases[args.phase](args))


if __name__ == "__main__":
    main()
