"""Microseconds per request through the whole ASGI app, in-process, and where they go.

Not part of ``make bench``: the tool for finding what to cut when a goal
is missed. It calls the app as uvicorn would (same scope, no sockets), on a
fresh SQLite database in a temporary directory, with logging at ``info`` to
/dev/null so the access log line is paid for as in production.

    .venv/bin/python bench/asgi_profile.py list            # GET /keys, 200 keys
    .venv/bin/python bench/asgi_profile.py verify          # POST /verify, cache hit
    .venv/bin/python bench/asgi_profile.py verify-restricted  # 3 scopes, 10 CIDRs (issue 15)
    .venv/bin/python bench/asgi_profile.py list --cprofile # the 40 costliest calls
    .venv/bin/python bench/asgi_profile.py list --query revoked=false  # with a query string

Prints one line a run: ``<target>: <us> us/request, <us> us CPU (<n> requests)``
(CPU time is steadier than wall time on a machine that does other work). Keys
stay in memory: nothing here prints one.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from inproc import create_account_with_keys, create_restricted_key, settings

from keyhouse.app import create_app
from keyhouse.db.migrate import migrate


def request(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    query: bytes = b"",
) -> Callable[[], Awaitable[tuple[int, bytes]]]:
    """One request to ``app``, as a coroutine function returning (status, body)."""

    async def call() -> tuple[int, bytes]:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query,
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        status = 0
        chunks: list[bytes] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            else:
                chunks.append(message.get("body", b""))

        await app(scope, receive, send)
        return status, b"".join(chunks)

    return call


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        s = settings(data_dir=Path(tmp), log_level="info")
        await migrate(s)
        app = create_app(s)
        async with app.router.lifespan_context(app):
            runtime = app.state.runtime
            _, keys = await create_account_with_keys(runtime, "profile", args.keys)
            if args.target in ("verify", "verify-restricted"):
                body: dict[str, Any] = {"key": keys[0]}
                if args.target == "verify-restricted":
                    restricted = await create_restricted_key(runtime)
                    body = {"key": restricted["key"], **restricted["verify"]}
                payload = json.dumps(body).encode()
                headers = [
                    (b"host", b"127.0.0.1"),
                    (b"authorization", f"Bearer {runtime.admin_tokens.first}".encode()),
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(payload)).encode()),
                ]
                call = request(app, "POST", "/verify", headers, payload)
            else:
                headers = [
                    (b"host", b"127.0.0.1"),
                    (b"authorization", f"Bearer {keys[0]}".encode()),
                ]
                call = request(app, "GET", "/keys", headers, b"", args.query.encode())
            status, _ = await call()
            if status != 200:
                raise SystemExit(f"{args.target}: status {status}")
            for _ in range(200):  # warm up: caches, compiled statements
                await call()
            if args.cprofile:
                profile = cProfile.Profile()
                profile.enable()
                for _ in range(args.requests):
                    await call()
                profile.disable()
                pstats.Stats(profile, stream=sys.stdout).sort_stats("cumulative").print_stats(40)
                return
            for _ in range(args.runs):
                started, cpu = time.perf_counter(), time.process_time()
                for _ in range(args.requests):
                    await call()
                per = (time.perf_counter() - started) / args.requests * 1e6
                per_cpu = (time.process_time() - cpu) / args.requests * 1e6
                print(
                    f"{args.target}: {per:.0f} us/request, {per_cpu:.0f} us CPU "
                    f"({args.requests} requests)"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("target", choices=["list", "verify", "verify-restricted"])
    parser.add_argument("--keys", type=int, default=200, help="keys in the account")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cprofile", action="store_true")
    parser.add_argument("--query", default="", help="list: the query string (no '?')")
    import uvloop  # as keyhouse serve runs

    # The access log: paid for, not shown.
    with open(os.devnull, "w") as devnull, contextlib.redirect_stderr(devnull):
        uvloop.run(main(parser.parse_args()))
