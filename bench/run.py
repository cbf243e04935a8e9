#!/usr/bin/env python3
"""``make bench``: keyhouse's performance, side by side with its floors and its peer.

Measures, each figure the median of BENCH_RUNS (default 3) runs, on 127.0.0.1:

- in-process ``Verifier.verify`` per second: cache hit, cache miss, malformed key;
- in-process CPU per cache miss on PostgreSQL (10,000 keys, a throwaway
  database on BENCH_POSTGRES_URL, made and dropped by the bench);
- HTTP with wrk (-t2 -c32 -d10s) against ``keyhouse serve --workers 2``:
  ``POST /verify`` and ``GET /keys`` (1 and 200 keys); in the same rounds an
  empty FastAPI and an empty Starlette endpoint under the server keyhouse uses
  (``keyhouse.serving``: uvicorn processes, 2 workers)
  (bench/floors.py) and the peer djangorestframework-api-key under gunicorn
  with 2 workers (``GET /verify``, key-protected, and its list of 200 keys);
- ``GET /keys`` latency (sequential requests) with 100, 1,000, 10,000 keys;
- lastUsedAt rows written during 100,000 verifications of 10 keys;
- peak RSS of a process with 100,000 keys cached.

Prints a table with PASS/MISS verdicts for the goals (not asserted: the exit
status is 0 whatever the figures, non-zero only when the benchmark itself
fails) and writes bench/results/latest.json.

With BENCH_BASELINE=<git ref> (the Makefile sets one), the same HTTP targets
of keyhouse are also run against that commit's ``src/`` (``git archive``),
served the same way from a copy of the same data, in the same interleaved
rounds: the figures of a change and of what it changes, side by side.

Knobs (environment): BENCH_RUNS=3, BENCH_DURATION=10 (seconds per wrk run),
BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres: the
server the PostgreSQL phase makes its database on; unreachable, the phase is
skipped with the reason),
PEER_DRF_DIR (default: ../shared/bench/peer_drf from the repository root),
PEER_DRF_VENV (default /tmp/peer_drf_venv, as the peer's bench.sh).

Runs keyhouse from this checkout: ``src/`` goes first on PYTHONPATH of every
process it starts, whichever interpreter runs this script. Every server it
starts runs in its own process group and is stopped at the end, on error too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
RESULTS = BENCH / "results" / "latest.json"
LUA = BENCH / "wrk_report.lua"
PEER_DIR = Path(os.environ.get("PEER_DRF_DIR") or ROOT.parent / "shared" / "bench" / "peer_drf")
PEER_VENV = Path(os.environ.get("PEER_DRF_VENV") or "/tmp/peer_drf_venv")  # noqa: S108 (bench.sh's)
HOST = "127.0.0.1"

RUNS = int(os.environ.get("BENCH_RUNS") or 3)
DURATION = int(os.environ.get("BENCH_DURATION") or 10)
THREADS = 2
CONNS = 32
WARMUP_S = 1
PEER_KEYS = 200
LIST_SIZES = (100, 1_000, 10_000)
# Account sizes created before the server starts: 1 and 200 for wrk, the rest for latency.
ACCOUNT_SIZES = (1, 200, *LIST_SIZES)
LIST_REQUESTS = {100: 10, 1_000: 10, 10_000: 5}  # sequential requests per run
LAST_USED = {"keys": 10, "verifications": 100_000, "duration_s": 5, "interval": 1.0}
RSS_KEYS = 100_000
PG_SERVER = os.environ.get("BENCH_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/postgres"
PG_MISS = {"keys": 10_000, "calls": 2_000}

BASELINE = os.environ.get("BENCH_BASELINE") or ""

GOALS = {
    # Of the baseline's req/s (BENCH_BASELINE): at most 5% slower.
    "vs_baseline": 0.95,
    "verify_vs_peer": 5.0,
    "list200_vs_peer": 2.0,
    "cache_hit_per_s": 200_000,
    "list10k_p50_ms": 150.0,
    "pg_miss_cpu_us": 1_000.0,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    pass


# -- processes ------------------------------------------------------------------------


def child_env(extra: dict[str, str] | None = None, src: Path = ROOT / "src") -> dict[str, str]:
    """The environment for keyhouse processes: ``src`` first, no stray settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOUSE_")}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra or {})
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        if s.connect_ex((HOST, port)) == 0:
            raise BenchError(f"port {port} already answers")
    return port


@dataclass
class Server:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    ready_path: str
    log_path: Path
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        log(f"starting {self.name} on {HOST}:{self.port}")
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(  # noqa: S603
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, workers included
            )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                if httpx.get(self.base + self.ready_path, timeout=2).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise BenchError(f"{self.name} did not come up in {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL to what is left after 10 s."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(pgid, 0)  # anyone left in the group?
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            log(f"{self.name}: still running after SIGTERM, SIGKILL")
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self.proc = None


def run_checked(argv: list[str], *, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kw)  # noqa: S603
    if res.returncode != 0:
        raise BenchError(
            f"{' '.join(map(str, argv[:4]))} ... failed ({res.returncode}):\n{res.stderr[-3000:]}"
        )
    return res


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


# -- tools ----------------------------------------------------------------------------


def ensure_wrk() -> None:
    if shutil.which("wrk"):
        return
    log("installing wrk (Debian package)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:  # noqa: S603
        run_checked(["apt-get", "update", "-qq"], timeout=600, env=env)
        run_checked(install, timeout=600, env=env)
    if not shutil.which("wrk"):
        raise BenchError("wrk is not installed and could not be installed (apt-get install wrk)")


def ensure_peer_venv() -> Path:
    """The peer harness's virtualenv, set up as its bench.sh does."""
    if not (PEER_DIR / "bench.sh").exists():
        raise BenchError(f"peer harness not found at {PEER_DIR} (set PEER_DRF_DIR)")
    py = PEER_VENV / "bin" / "python"
    if not py.exists():
        log(f"creating the peer's virtualenv {PEER_VENV}")
        base = shutil.which("python3.11") or shutil.which("python3") or sys.executable
        run_checked([base, "-m", "venv", str(PEER_VENV)], timeout=300)
        run_checked([str(py), "-m", "pip", "install", "-q", "--upgrade", "pip"], timeout=600)
    run_checked(
        [str(py), "-m", "pip", "install", "-q", "-r", str(PEER_DIR / "requirements.txt")],
        timeout=900,
    )
    return py


# -- wrk ------------------------------------------------------------------------------


@dataclass
class Target:
    key: str
    label: str
    server: Server
    path: str
    method: str = "GET"
    auth: str = ""
    body: str = ""

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "WRK_METHOD": self.method,
            "WRK_AUTH": self.auth,
            "WRK_BODY": self.body,
        }


def cpu_times() -> list[int]:
    with open("/proc/stat") as fh:
        return [int(x) for x in fh.readline().split()[1:9]]


CLK_TCK = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> dict[int, float]:
    """CPU seconds (user + system) of each process in the process group ``pgid``."""
    out: dict[int, float] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                data = fh.read()
        except OSError:
            continue
        fields = data[data.rindex(")") + 2 :].split()  # state ppid pgrp ... utime stime
        if int(fields[2]) == pgid:
            out[int(name)] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return out


def wrk_argv(url: str, duration: int) -> list[str]:
    return [
        "wrk",
        f"-t{THREADS}",
        f"-c{CONNS}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        url,
    ]


def run_wrk(target: Target) -> dict[str, Any]:
    url = target.server.base + target.path
    if WARMUP_S:
        subprocess.run(  # noqa: S603
            wrk_argv(url, WARMUP_S), env=target.env(), capture_output=True, timeout=60
        )
    assert target.server.proc is not None
    pgid = target.server.proc.pid
    g0 = group_cpu_s(pgid)
    c0 = cpu_times()
    res = run_checked(wrk_argv(url, DURATION), timeout=DURATION + 60, env=target.env())
    c1 = cpu_times()
    g1 = group_cpu_s(pgid)
    found = [ln for ln in res.stdout.splitlines() if ln.startswith("WRKJSON ")]
    if not found:
        raise BenchError(f"wrk printed no summary for {target.label}:\n{res.stdout[-2000:]}")
    out: dict[str, Any] = json.loads(found[-1].removeprefix("WRKJSON "))
    d = [b - a for a, b in zip(c0, c1, strict=True)]
    total = sum(d) or 1
    out["cpu_busy_pct"] = round(100 * (total - d[3] - d[4]) / total, 1)
    # How the load split over the server's processes (its workers, or the one
    # process of plain `serve`): CPU seconds each, busiest first.
    out["server_cpu_s"] = sorted((round(g1[pid] - g0.get(pid, 0.0), 2) for pid in g1), reverse=True)
    # Server CPU per answered request: per core, whatever the process count.
    out["cpu_us_per_request"] = round(
        1e6 * sum(g1[pid] - g0.get(pid, 0.0) for pid in g1) / max(out["requests"], 1), 1
    )
    return out


def summarize_http(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": round(statistics.median(r["rps"] for r in runs), 1),
        "p50_ms": round(statistics.median(r["p50_ms"] for r in runs), 3),
        "p99_ms": round(statistics.median(r["p99_ms"] for r in runs), 3),
        "rps_min": min(r["rps"] for r in runs),
        "rps_max": max(r["rps"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "non_2xx": sum(r["err_status"] for r in runs),
        "socket_errors": sum(
            r["err_connect"] + r["err_read"] + r["err_write"] + r["err_timeout"] for r in runs
        ),
        "cpu_busy_pct": statistics.median(r["cpu_busy_pct"] for r in runs),
        "cpu_us_per_request": statistics.median(r["cpu_us_per_request"] for r in runs),
        # The two busiest processes of the server (its 2 workers), CPU seconds per run.
        "worker_cpu_s": [
            round(statistics.median((r["server_cpu_s"] + [0.0, 0.0])[i] for r in runs), 2)
            for i in (0, 1)
        ],
    }


# -- the phases -----------------------------------------------------------------------


def inproc(phase: str, args: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    res = run_checked(
        [sys.executable, str(BENCH / "inproc.py"), phase, *args], timeout=timeout, env=env
    )
    rows = json_lines(res.stdout)
    if not rows:
        raise BenchError(f"inproc {phase} printed nothing:\n{res.stderr[-2000:]}")
    return rows[-1]


def keyhouse_env(data_dir: Path, admin_token: str, src: Path = ROOT / "src") -> dict[str, str]:
    return child_env(
        {
            "KEYHOUSE_DATA_DIR": str(data_dir),
            "KEYHOUSE_ADMIN_TOKENS": admin_token,
            "KEYHOUSE_LOG_LEVEL": "warning",  # the access log is at info
        },
        src=src,
    )


def baseline_src(ref: str, into: Path) -> Path:
    """``src/`` of commit ``ref``, extracted under ``into`` (git archive: no worktree left)."""
    into.mkdir(parents=True)
    archive = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "archive", "--format=tar", ref, "src"],  # noqa: S607
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        raise BenchError(f"BENCH_BASELINE={ref}: {archive.stderr.decode(errors='replace')}")
    subprocess.run(  # noqa: S603
        ["tar", "-x", "-C", str(into)],  # noqa: S607
        input=archive.stdout,
        check=True,
    )
    return into / "src"


def stamp_for_baseline(db: Path, src: Path) -> None:
    """Mark the copied database as at the baseline's newest revision.

    The copy was migrated by this checkout; an older keyhouse refuses a
    database at a revision it does not know. What the newer revisions add
    (nullable or defaulted columns, tables, a nullable events.account_id) is
    invisible to the older code, which names the columns it uses.
    """
    revisions: dict[str, str | None] = {}
    for path in (src / "keyhouse" / "migrations" / "versions").glob("*.py"):
        text = path.read_text()
        rev = re.search(r'^revision: str = "(\w+)"', text, re.M)
        down = re.search(r'^down_revision: str \| None = (?:"(\w+)"|None)', text, re.M)
        if rev and down:
            revisions[rev.group(1)] = down.group(1)
    heads = set(revisions) - set(revisions.values())
    if len(heads) != 1:
        raise BenchError(f"baseline {BASELINE}: migration heads {sorted(heads)}")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (heads.pop(),))


def keyhouse_server(name: str, env: dict[str, str], log_path: Path, workers: int = 2) -> Server:
    """``keyhouse serve --workers N`` with ``env`` (its PYTHONPATH says which src)."""
    argv = [sys.executable, "-m", "keyhouse", "serve", "--host", HOST, "--port", "0"]
    return Server(name, [*argv, "--workers", str(workers)], env, 0, "/healthz", log_path)


def in_process_phase(tmp: Path, admin_token: str, results: dict[str, Any]) -> None:
    runs = str(RUNS)
    log(f"in-process: Verifier.verify rates ({RUNS} runs each)")
    results["inprocess"] = inproc(
        "verify",
        ["--runs", runs, "--miss-calls", "2000"],
        keyhouse_env(tmp / "inproc-verify", admin_token),
        timeout=600,
    )
    pg_miss_phase(tmp, admin_token, results)
    log(
        f"in-process: lastUsedAt writes, {LAST_USED['verifications']:,} verifications of "
        f"{LAST_USED['keys']} keys over {LAST_USED['duration_s']} s ({RUNS} runs)"
    )
    results["last_used"] = inproc(
        "last-used",
        [
            "--runs",
            runs,
            "--keys",
            str(LAST_USED["keys"]),
            "--verifications",
            str(LAST_USED["verifications"]),
            "--duration-s",
            str(LAST_USED["duration_s"]),
            "--interval",
            str(LAST_USED["interval"]),
        ],
        keyhouse_env(tmp / "inproc-last-used", admin_token),
        timeout=600,
    )
    log(f"in-process: peak RSS with {RSS_KEYS:,} keys cached ({RUNS} processes)")
    rss_runs = [
        inproc(
            "rss",
            ["--keys", str(RSS_KEYS)],
            keyhouse_env(tmp / f"inproc-rss-{i}", admin_token),
            timeout=300,
        )
        for i in range(RUNS)
    ]
    results["rss"] = {
        "runs": rss_runs,
        "keys_cached": RSS_KEYS,
        "median_vm_hwm_mib": statistics.median(r["vm_hwm_mib"] for r in rss_runs),
        "median_ru_maxrss_mib": statistics.median(r["ru_maxrss_mib"] for r in rss_runs),
        "median_baseline_rss_mib": statistics.median(r["baseline_rss_mib"] for r in rss_runs),
        "median_bytes_per_entry": statistics.median(r["bytes_per_entry"] for r in rss_runs),
    }


def pg_miss_phase(tmp: Path, admin_token: str, results: dict[str, Any]) -> None:
    """CPU per cache-miss verification on PostgreSQL (bench/inproc.py verify-pg)."""
    log(
        f"in-process: cache-miss Verifier.verify on PostgreSQL, {PG_MISS['keys']:,} keys,"
        f" {PG_MISS['calls']:,} misses a run ({RUNS} runs)"
    )
    try:
        results["inprocess_pg"] = inproc(
            "verify-pg",
            [
                "--runs",
                str(RUNS),
                "--keys",
                str(PG_MISS["keys"]),
                "--calls",
                str(PG_MISS["calls"]),
                "--server",
                PG_SERVER,
            ],
            keyhouse_env(tmp / "inproc-verify-pg", admin_token),
            timeout=900,
        )
    except BenchError as exc:
        # No PostgreSQL here: the rest of the bench stands without this figure.
        reason = str(exc).strip().splitlines()[-1][:200]
        log(f"in-process: PostgreSQL phase skipped: {reason}")
        results["inprocess_pg"] = {"skipped": reason}


def pg_miss_line(results: dict[str, Any]) -> str:
    pg = results.get("inprocess_pg") or {"skipped": "not run"}
    label = "cache miss (PostgreSQL, cache off)"
    if "skipped" in pg:
        return f"  {label:42} skipped: {pg['skipped']}"
    runs = ", ".join(f"{x:,.0f}" for x in pg["runs_cpu_us_per_miss"])
    return (
        f"  {label:42} {pg['cpu_us_per_miss']:>9,.0f} us CPU per miss   runs: {runs}"
        f" (wall {pg['wall_us_per_miss']:,.0f} us; {pg['keys']:,} keys)"
    )


def pg_miss_verdict(results: dict[str, Any]) -> dict[str, str]:
    goal = f"cache-miss verification on PostgreSQL < {GOALS['pg_miss_cpu_us']:,.0f} us CPU"
    pg = results.get("inprocess_pg") or {"skipped": "not run"}
    if "skipped" in pg:
        return {"goal": goal, "verdict": "SKIP", "figures": pg["skipped"]}
    cpu = pg["cpu_us_per_miss"]
    return {
        "goal": goal,
        "verdict": "PASS" if cpu < GOALS["pg_miss_cpu_us"] else "MISS",
        "figures": f"{cpu:,.0f} us CPU per miss",
    }


def setup_keyhouse(tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    log(f"keyhouse: creating accounts with {', '.join(f'{n:,}' for n in ACCOUNT_SIZES)} keys")
    keys_file = tmp / "keyhouse" / "bench_keys.json"
    info = inproc(
        "setup",
        ["--sizes", ",".join(map(str, ACCOUNT_SIZES)), "--out", str(keys_file)],
        env,
        timeout=900,
    )
    accounts: dict[str, Any] = json.loads(keys_file.read_text())
    return {"accounts": accounts, "setup": info}


def setup_peer(py: Path, tmp: Path, env: dict[str, str]) -> str:
    log(f"peer: fresh SQLite database, {PEER_KEYS} keys (inproc_bench.py create)")
    project = PEER_DIR / "project"
    run_checked([str(py), "manage.py", "migrate", "-v0"], timeout=300, cwd=project, env=env)
    keys_file = tmp / "peer_keys.txt"
    run_checked(
        [
            str(py),
            str(PEER_DIR / "inproc_bench.py"),
            "create",
            "--count",
            str(PEER_KEYS),
            "--keys-file",
            str(keys_file),
        ],
        timeout=600,
        env=env,
    )
    return keys_file.read_text().split()[0]


def sanity(
    kh: Server,
    admin: str,
    accounts: dict[str, Any],
    floors: list[Server],
    peer: Server,
    peer_key: str,
) -> None:
    """Each target answers what it should before it is loaded."""
    with httpx.Client(timeout=60) as c:
        r = c.post(
            kh.base + "/verify",
            json={"key": accounts["1"]["key"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        if r.status_code != 200 or r.json().get("valid") is not True:
            raise BenchError(f"keyhouse POST /verify: {r.status_code} {r.text[:300]}")
        for size in ("1", "200"):
            r = c.get(
                kh.base + "/keys", headers={"Authorization": f"Bearer {accounts[size]['key']}"}
            )
            if r.status_code != 200 or len(r.json()["keys"]) != int(size):
                raise BenchError(f"keyhouse GET /keys ({size} keys): {r.status_code}")
        for f in floors:
            r = c.get(f.base + "/")
            if r.status_code != 200:
                raise BenchError(f"{f.name} GET /: {r.status_code}")
        auth = {"Authorization": f"Api-Key {peer_key}"}
        r = c.get(peer.base + "/verify", headers=auth)
        if r.status_code != 200:
            raise BenchError(f"peer GET /verify: {r.status_code}")
        r = c.get(peer.base + "/verify", headers={"Authorization": "Api-Key nope.nope"})
        if r.status_code != 403:
            raise BenchError(f"peer GET /verify with a bad key: {r.status_code}, expected 403")
        r = c.get(peer.base + "/keys", headers=auth)
        if r.status_code != 200 or len(r.json()) != PEER_KEYS:
            raise BenchError(f"peer GET /keys: {r.status_code}")


def sanity_restricted(kh: Server, admin: str, accounts: dict[str, Any]) -> None:
    """The restricted key is valid with its scope and address, refused from another."""
    restricted = accounts["restricted"]
    with httpx.Client(timeout=60) as c:
        for ip, valid in ((restricted["verify"]["ip"], True), ("192.0.2.1", False)):
            r = c.post(
                kh.base + "/verify",
                json={"key": restricted["key"], **restricted["verify"], "ip": ip},
                headers={"Authorization": f"Bearer {admin}"},
            )
            if r.status_code != 200 or r.json().get("valid") is not valid:
                raise BenchError(f"restricted POST /verify from {ip}: {r.text[:300]}")


def list_latency(kh: Server, accounts: dict[str, Any]) -> dict[str, Any]:
    """GET /keys one request at a time on one connection: p50 per run, median of runs."""
    out: dict[str, Any] = {}
    with httpx.Client(base_url=kh.base, timeout=120) as c:
        for size in LIST_SIZES:
            headers = {"Authorization": f"Bearer {accounts[str(size)]['key']}"}
            r = c.get("/keys", headers=headers)  # warm: connection, cache, pages
            if r.status_code != 200 or len(r.json()["keys"]) != size:
                raise BenchError(f"GET /keys ({size} keys): {r.status_code}")
            body_bytes = len(r.content)
            p50s, all_ms = [], []
            for _ in range(RUNS):
                times = []
                for _ in range(LIST_REQUESTS[size]):
                    t0 = time.perf_counter()
                    r = c.get("/keys", headers=headers)
                    times.append((time.perf_counter() - t0) * 1e3)
                    if r.status_code != 200:
                        raise BenchError(f"GET /keys ({size} keys): {r.status_code}")
                p50s.append(statistics.median(times))
                all_ms.extend(times)
            out[str(size)] = {
                "p50_ms": round(statistics.median(p50s), 2),
                "run_p50_ms": [round(x, 2) for x in p50s],
                "min_ms": round(min(all_ms), 2),
                "max_ms": round(max(all_ms), 2),
                "requests_per_run": LIST_REQUESTS[size],
                "body_bytes": body_bytes,
            }
            log(f"GET /keys with {size:,} keys: p50 {out[str(size)]['p50_ms']} ms")
    return out


# -- report ---------------------------------------------------------------------------


def environment(peer_py: Path) -> dict[str, Any]:
    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True)  # noqa: S607
    peer = subprocess.run(  # noqa: S603
        [
            str(peer_py),
            "-c",
            "import django, rest_framework, rest_framework_api_key as k, gunicorn, sys;"
            "print(sys.version.split()[0], django.__version__, rest_framework.__version__,"
            " k.__version__, gunicorn.__version__)",
        ],
        capture_output=True,
        text=True,
    ).stdout.split()
    git = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],  # noqa: S607
        capture_output=True,
        text=True,
    ).stdout.strip()

    def ver(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "?"

    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git": git,
        "cpu": f"{cpu} x{os.cpu_count()}",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "fastapi": ver("fastapi"),
        "starlette": ver("starlette"),
        "uvicorn": ver("uvicorn"),
        "sqlalchemy": ver("sqlalchemy"),
        "wrk": (wrk.stdout + wrk.stderr).split("\n")[0].strip(),
        "peer": dict(
            zip(
                [
                    "python",
                    "django",
                    "djangorestframework",
                    "djangorestframework_api_key",
                    "gunicorn",
                ],
                peer,
                strict=False,
            )
        ),
        "runs": RUNS,
        "wrk_settings": f"-t{THREADS} -c{CONNS} -d{DURATION}s --timeout 5s (+{WARMUP_S} s warmup)",
    }


def ratio(a: float, b: float) -> float:
    return round(a / b, 2) if b else float("nan")


def baseline_targets(base: Server | None, admin: str, accounts: dict[str, Any]) -> list[Target]:
    """keyhouse's targets against the baseline server (none without BENCH_BASELINE)."""
    if base is None:
        return []
    return [
        Target(
            "base_verify",
            f"baseline {BASELINE} POST /verify",
            base,
            "/verify",
            "POST",
            f"Bearer {admin}",
            json.dumps({"key": accounts["1"]["key"]}),
        ),
        Target(
            "base_keys1",
            f"baseline {BASELINE} GET /keys (1 key)",
            base,
            "/keys",
            auth=f"Bearer {accounts['1']['key']}",
        ),
        Target(
            "base_keys200",
            f"baseline {BASELINE} GET /keys (200 keys)",
            base,
            "/keys",
            auth=f"Bearer {accounts['200']['key']}",
        ),
    ]


def compute(results: dict[str, Any]) -> None:
    h = {k: v["median"] for k, v in results["http"].items()}
    results["ratios"] = {
        "keyhouse POST /verify / peer GET /verify": ratio(
            h["kh_verify"]["rps"], h["peer_verify"]["rps"]
        ),
        "keyhouse GET /keys (200) / peer GET /keys (200)": ratio(
            h["kh_keys200"]["rps"], h["peer_keys200"]["rps"]
        ),
        "keyhouse POST /verify / FastAPI floor": ratio(
            h["kh_verify"]["rps"], h["floor_fastapi"]["rps"]
        ),
        "keyhouse POST /verify / Starlette floor": ratio(
            h["kh_verify"]["rps"], h["floor_starlette"]["rps"]
        ),
        "keyhouse GET /keys (1) / FastAPI floor": ratio(
            h["kh_keys1"]["rps"], h["floor_fastapi"]["rps"]
        ),
        "keyhouse GET /keys (1) / Starlette floor": ratio(
            h["kh_keys1"]["rps"], h["floor_starlette"]["rps"]
        ),
        "FastAPI floor / Starlette floor": ratio(
            h["floor_fastapi"]["rps"], h["floor_starlette"]["rps"]
        ),
    }
    r = results["ratios"]
    # Issue 15: what a key with 3 scopes and 10 CIDRs costs over an unrestricted one.
    r["keyhouse POST /verify (3 scopes, 10 CIDRs) / unrestricted"] = ratio(
        h["kh_verify_restricted"]["rps"], h["kh_verify"]["rps"]
    )
    r["server CPU per POST /verify: serve (1 process) / --workers 2"] = ratio(
        h["kh1_verify"]["cpu_us_per_request"], h["kh_verify"]["cpu_us_per_request"]
    )
    hit = results["inprocess"]["cache_hit"]["median_per_s"]
    p50_10k = results["list_latency"]["10000"]["p50_ms"]
    lu = results["last_used"]
    verdicts = [
        (
            "POST /verify req/s >= 5x peer's key-protected GET /verify",
            r["keyhouse POST /verify / peer GET /verify"] >= GOALS["verify_vs_peer"],
            f"{h['kh_verify']['rps']:,.0f} vs {h['peer_verify']['rps']:,.0f} req/s = "
            f"{r['keyhouse POST /verify / peer GET /verify']:.2f}x",
        ),
        (
            "GET /keys (200 keys) req/s >= 2x peer's list of 200 keys",
            r["keyhouse GET /keys (200) / peer GET /keys (200)"] >= GOALS["list200_vs_peer"],
            f"{h['kh_keys200']['rps']:,.0f} vs {h['peer_keys200']['rps']:,.0f} req/s = "
            f"{r['keyhouse GET /keys (200) / peer GET /keys (200)']:.2f}x",
        ),
        (
            "in-process cache-hit verification >= 200,000/s",
            hit >= GOALS["cache_hit_per_s"],
            f"{hit:,.0f}/s",
        ),
        (
            "GET /keys with 10,000 keys p50 <= 150 ms",
            p50_10k <= GOALS["list10k_p50_ms"],
            f"{p50_10k:,.1f} ms",
        ),
        (
            "lastUsedAt writes <= keys x (duration / flush interval)",
            all(run["rows_written"] <= run["goal_max_rows"] for run in lu["runs"]),
            f"{lu['median_rows_written']:g} rows (runs: "
            + ", ".join(f"{x['rows_written']}" for x in lu["runs"])
            + f") <= {lu['median_goal_max_rows']:g}",
        ),
    ]
    per_request = r["server CPU per POST /verify: serve (1 process) / --workers 2"]
    verdicts.append(
        (
            "serve (1 process) CPU per POST /verify <= 1.05x that of --workers 2",
            per_request <= 1.05,
            f"{h['kh1_verify']['cpu_us_per_request']:.0f} vs "
            f"{h['kh_verify']['cpu_us_per_request']:.0f} us = {per_request:.2f}x",
        )
    )
    if "base_verify" in h:
        for key, label in (
            ("verify", "POST /verify"),
            ("keys1", "GET /keys (1 key)"),
            ("keys200", "GET /keys (200 keys)"),
        ):
            now, before = h[f"kh_{key}"]["rps"], h[f"base_{key}"]["rps"]
            r[f"keyhouse {label} / baseline {BASELINE}"] = ratio(now, before)
            verdicts.append(
                (
                    f"{label} req/s at most 5% below baseline {BASELINE}",
                    ratio(now, before) >= GOALS["vs_baseline"],
                    f"{now:,.0f} vs {before:,.0f} req/s = {ratio(now, before):.2f}x",
                )
            )
    results["verdicts"] = [
        {"goal": g, "verdict": "PASS" if ok else "MISS", "figures": f} for g, ok, f in verdicts
    ] + [pg_miss_verdict(results)]


def table(results: dict[str, Any]) -> str:
    env = results["environment"]
    out = [
        f"keyhouse bench  {env['date']}  {env['git']}  {env['cpu']}  Python {env['python']}",
        f"median of {env['runs']} runs; wrk {env['wrk_settings']};"
        " every server 2 workers, 127.0.0.1",
        "",
        f"{'In-process Verifier.verify':44} {'median/s':>12} {'us/op':>8}   runs/s",
    ]
    ip = results["inprocess"]
    for key, label in (
        ("cache_hit", "cache hit"),
        ("cache_miss", "cache miss (SQLite, cache off)"),
        ("malformed", "malformed key (checksum fails)"),
    ):
        row = ip[key]
        runs = ", ".join(f"{x:,.0f}" for x in row["runs_per_s"])
        out.append(f"  {label:42} {row['median_per_s']:>12,.0f} {row['us_per_op']:>8.2f}   {runs}")
    out.append(pg_miss_line(results))
    out += [
        "",
        f"{'HTTP (wrk)':44} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'req/s min-max':>17}"
        f" {'non-2xx':>8} {'sock err':>8} {'CPU %':>6} {'us CPU/req':>10}  worker CPU s",
    ]
    for t in results["http"].values():
        m = t["median"]
        out.append(
            f"  {t['label']:42} {m['rps']:>10,.0f} {m['p50_ms']:>8.2f} {m['p99_ms']:>8.2f}"
            f" {m['rps_min']:>8,.0f}-{m['rps_max']:<8,.0f} {m['non_2xx']:>8}"
            f" {m['socket_errors']:>8}"
            f" {m['cpu_busy_pct']:>6.0f} {m['cpu_us_per_request']:>10.0f}"
            f"  {m['worker_cpu_s'][0]:.1f} + {m['worker_cpu_s'][1]:.1f}"
        )
    out.append(
        "  (CPU %: the whole machine, wrk included; us CPU/req: the server's CPU time per"
        " request, all its processes;"
        "\n   worker CPU s: CPU seconds of the server's"
        " two busiest processes per run)"
    )
    out += ["", "Ratios (req/s)"]
    for name, value in results["ratios"].items():
        out.append(f"  {name:52} {value:>6.2f}x")
    out += ["", f"{'GET /keys latency, sequential requests':44} {'p50 ms':>8}   run p50s (ms)"]
    for size, row in results["list_latency"].items():
        runs = ", ".join(f"{x:.1f}" for x in row["run_p50_ms"])
        out.append(f"  {int(size):>6,} keys{'':32} {row['p50_ms']:>8.1f}   {runs}")
    lu = results["last_used"]
    out += [
        "",
        f"lastUsedAt writes: {LAST_USED['verifications']:,} verifications of {lu['keys']} keys over"
        f" ~{LAST_USED['duration_s']} s, flush every {lu['interval_s']:g} s",
    ]
    for i, run in enumerate(lu["runs"], 1):
        out.append(
            f"  run {i}: {run['rows_written']} rows in {run['flushes']} flushes during"
            f" {run['duration_s']:.2f} s (goal <= {run['goal_max_rows']:g});"
            f" +{run['rows_at_shutdown']} at the shutdown flush; {run['valid']:,} valid"
        )
    rss = results["rss"]
    out += [
        "",
        f"Peak RSS, one process with the app and {rss['keys_cached']:,} keys cached:"
        f" VmHWM {rss['median_vm_hwm_mib']:.1f} MiB"
        f" (ru_maxrss {rss['median_ru_maxrss_mib']:.1f} MiB;"
        f" {rss['median_baseline_rss_mib']:.1f} MiB before filling;"
        f" ~{rss['median_bytes_per_entry']:,.0f} B per entry)",
        "",
        "Verdicts",
    ]
    for v in results["verdicts"]:
        out.append(f"  {v['verdict']:4}  {v['goal']}: {v['figures']}")
    return "\n".join(out)


def write_results(results: dict[str, Any]) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, RESULTS)


# -- main -----------------------------------------------------------------------------


def main() -> int:
    started = time.monotonic()
    if RUNS < 3:
        log(f"BENCH_RUNS={RUNS}: fewer than 3 runs, figures are not medians of 3")
    ensure_wrk()
    peer_py = ensure_peer_venv()
    results: dict[str, Any] = {"environment": environment(peer_py)}
    phases: dict[str, float] = {}
    servers: list[Server] = []
    tmp = Path(tempfile.mkdtemp(prefix="keyhouse-bench-"))
    os.chmod(tmp, 0o700)
    admin = "kh_admin_bench_" + secrets.token_urlsafe(24)
    try:
        t = time.monotonic()
        in_process_phase(tmp, admin, results)
        phases["in_process_s"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        kh_env = keyhouse_env(tmp / "keyhouse", admin)
        kh_data = setup_keyhouse(tmp, kh_env)
        accounts = kh_data["accounts"]
        results["keyhouse_setup"] = kh_data["setup"]
        peer_env = {**os.environ, "PEER_DRF_DB": str(tmp / "peer.sqlite3")}
        peer_key = setup_peer(peer_py, tmp, peer_env)
        phases["setup_s"] = round(time.monotonic() - t, 1)

        kh = keyhouse_server("keyhouse serve --workers 2", kh_env, tmp / "keyhouse.log")
        # Plain `serve` (one process) on a copy of the same data: is one process
        # as fast per core as each worker?
        shutil.copytree(tmp / "keyhouse", tmp / "single-data")
        kh1 = keyhouse_server(
            "keyhouse serve (one process)",
            keyhouse_env(tmp / "single-data", admin),
            tmp / "keyhouse-single.log",
            workers=1,
        )
        base: Server | None = None
        if BASELINE:
            # The same data (a copy: two servers, two SQLite files), the
            # baseline's code.
            shutil.copytree(tmp / "keyhouse", tmp / "baseline-data")
            src = baseline_src(BASELINE, tmp / "baseline")
            stamp_for_baseline(tmp / "baseline-data" / "keyhouse.db", src)
            base = keyhouse_server(
                f"baseline {BASELINE}: keyhouse serve --workers 2",
                keyhouse_env(tmp / "baseline-data", admin, src=src),
                tmp / "baseline.log",
            )
        floor_env = child_env()
        fa = Server(
            "floors:fastapi_app, 2 workers (keyhouse.serving, as keyhouse)",
            [
                sys.executable,
                "-m",
                "keyhouse.serving",
                "floors:fastapi_app",
                "--app-dir",
                str(BENCH),
                "--workers",
                "2",
            ],
            floor_env,
            0,
            "/",
            tmp / "floor-fastapi.log",
        )
        st = Server(
            "floors:starlette_app, 2 workers (keyhouse.serving, as keyhouse)",
            [
                sys.executable,
                "-m",
                "keyhouse.serving",
                "floors:starlette_app",
                "--app-dir",
                str(BENCH),
                "--workers",
                "2",
            ],
            floor_env,
            0,
            "/",
            tmp / "floor-starlette.log",
        )
        peer = Server(
            "peer gunicorn (2 sync workers)",
            [
                str(PEER_VENV / "bin" / "gunicorn"),
                "keysvc.wsgi:application",
                "--workers",
                "2",
                "--worker-class",
                "sync",
                "--graceful-timeout",
                "5",
                "--log-level",
                "warning",
            ],
            peer_env,
            0,
            "/ping",
            tmp / "peer.log",
            cwd=PEER_DIR / "project",
        )
        for s in (kh, kh1, base, fa, st, peer):
            if s is None:
                continue
            s.port = free_port()
            if s is kh or s is kh1 or s is base:
                s.argv[s.argv.index("--port") + 1] = str(s.port)
            elif s is peer:
                s.argv += ["--bind", f"{HOST}:{s.port}"]
            else:
                s.argv += ["--host", HOST, "--port", str(s.port)]
            servers.append(s)
            s.start()
        for s in servers:
            s.wait_ready()
        sanity(kh, admin, accounts, [fa, st], peer, peer_key)
        sanity_restricted(kh, admin, accounts)
        if base is not None:
            sanity(base, admin, accounts, [], peer, peer_key)

        t = time.monotonic()
        log("GET /keys latency, sequential")
        results["list_latency"] = list_latency(kh, accounts)
        phases["list_latency_s"] = round(time.monotonic() - t, 1)

        targets = [
            Target(
                "kh_verify",
                "keyhouse POST /verify",
                kh,
                "/verify",
                "POST",
                f"Bearer {admin}",
                json.dumps({"key": accounts["1"]["key"]}),
            ),
            Target(
                "kh_keys1",
                "keyhouse GET /keys (1 key)",
                kh,
                "/keys",
                auth=f"Bearer {accounts['1']['key']}",
            ),
            Target(
                "kh_keys200",
                "keyhouse GET /keys (200 keys)",
                kh,
                "/keys",
                auth=f"Bearer {accounts['200']['key']}",
            ),
            Target(
                "kh_verify_restricted",
                "keyhouse POST /verify (3 scopes, 10 CIDRs)",
                kh,
                "/verify",
                "POST",
                f"Bearer {admin}",
                json.dumps(
                    {"key": accounts["restricted"]["key"], **accounts["restricted"]["verify"]}
                ),
            ),
            Target(
                "kh1_verify",
                "keyhouse serve (1 process) POST /verify",
                kh1,
                "/verify",
                "POST",
                f"Bearer {admin}",
                json.dumps({"key": accounts["1"]["key"]}),
            ),
            *baseline_targets(base, admin, accounts),
            Target("floor_fastapi", "floor: FastAPI empty GET /", fa, "/"),
            Target("floor_starlette", "floor: Starlette empty GET /", st, "/"),
            Target(
                "peer_verify",
                "peer DRF GET /verify (key-protected)",
                peer,
                "/verify",
                auth=f"Api-Key {peer_key}",
            ),
            Target(
                "peer_keys200",
                f"peer DRF GET /keys ({PEER_KEYS} keys)",
                peer,
                "/keys",
                auth=f"Api-Key {peer_key}",
            ),
        ]
        t = time.monotonic()
        raw: dict[str, list[dict[str, Any]]] = {tg.key: [] for tg in targets}
        # Interleaved: each round runs every target once, so drift on a shared
        # machine spreads over all of them instead of biasing the last.
        for r in range(1, RUNS + 1):
            for tg in targets:
                log(f"wrk round {r}/{RUNS}: {tg.label}")
                raw[tg.key].append(run_wrk(tg))
        phases["wrk_s"] = round(time.monotonic() - t, 1)
        results["http"] = {
            tg.key: {
                "label": tg.label,
                "method": tg.method,
                "path": tg.path,
                "server": tg.server.name,
                "median": summarize_http(raw[tg.key]),
                "runs": raw[tg.key],
            }
            for tg in targets
        }
    finally:
        for s in reversed(servers):
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    compute(results)
    phases["total_s"] = round(time.monotonic() - started, 1)
    results["phases"] = phases
    write_results(results)
    print(table(results))
    print(f"\nwritten: {RESULTS.relative_to(ROOT)}; total {phases['total_s']:.0f} s")
    return 0


def _terminate(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)  # runs the finally blocks: servers are stopped


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    try:
        sys.exit(main())
    except BenchError as exc:
        log(f"bench failed: {exc}")
        sys.exit(1)
