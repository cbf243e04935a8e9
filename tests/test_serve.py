"""``keyhouse serve`` in one process: served the way a worker is, stopped gracefully.

One process and each worker of ``--workers N`` go through ``serving.serve_socket``
on a socket from ``serving.tcp_socket`` (``IPPROTO_TCP``: asyncio sets
``TCP_NODELAY`` on its connections; uvloop does anyway) with the same uvicorn
options: one way to serve, so the two cannot drift apart.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from keyhouse import cli
from tests.factories import bearer
from tests.limits.conftest import free_port
from tests.test_cli import expect_ok, keyhouse

ADMIN = "serve-test-admin-token-0123456789abcdef"
# What uvicorn.run gave: it raises SIGTERM again after its graceful shutdown, swallows SIGINT.
EXITS = {signal.SIGTERM: -signal.SIGTERM, signal.SIGINT: 0}


def test_one_process_serves_as_a_worker_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYHOUSE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("KEYHOUSE_LOG_LEVEL", "warning")
    monkeypatch.setenv("KEYHOUSE_WORKERS", "1")  # serve --workers sets it: restored after
    served: list[tuple[socket.socket, dict[str, Any]]] = []
    spawned: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "serve_socket", lambda sock, options: served.append((sock, options)))
    # Not in this process: pytest's own logging stays as it is.
    monkeypatch.setattr(cli, "route_stdlib_logging", lambda level: None)
    monkeypatch.setattr(
        cli, "serve_workers", lambda host, port, n, options, app=None: spawned.append(options)
    )
    runner = CliRunner()

    result = runner.invoke(cli.app, ["serve", "--port", "0"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli.app, ["serve", "--port", "0", "--workers", "2"])
    assert result.exit_code == 0, result.output

    [(sock, options)] = served
    try:
        assert sock.type == socket.SOCK_STREAM
        assert sock.proto == socket.IPPROTO_TCP  # accepted sockets inherit it: TCP_NODELAY
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0  # its port alone
        assert sock.getsockname()[0] == "127.0.0.1"
    finally:
        sock.close()
    assert isinstance(options.pop("app"), FastAPI)
    # A worker gets the app as the factory keyhouse.app:app_from_env, the rest alike.
    assert options == spawned[0]


def test_a_taken_port_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = keyhouse(
            tmp_path / "data", "serve", "--port", str(port), KEYHOUSE_ADMIN_TOKENS=ADMIN
        )
    assert result.code == 1, result.err
    assert result.err_lines == [
        f"keyhouse: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_it_gracefully(tmp_path: Path, signum: signal.Signals) -> None:
    data = tmp_path / "data"
    expect_ok(keyhouse(data, "init"))
    created = keyhouse(data, "account", "create", "--name", "Acme", "--json")
    expect_ok(created)
    account, key = created.json()["accountId"], created.json()["key"]
    port = free_port()
    env = {
        **os.environ,
        "KEYHOUSE_DATA_DIR": str(data),
        "KEYHOUSE_ADMIN_TOKENS": ADMIN,
        "KEYHOUSE_LOG_LEVEL": "info",  # the "serving" line is at info
        "KEYHOUSE_LAST_USED_FLUSH_SECONDS": "3600",  # written at shutdown, not before
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyhouse", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, f"keyhouse serve exited with {proc.returncode}"
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "keyhouse serve did not start within 60 s"
                time.sleep(0.05)
        assert health.json()["pid"] == proc.pid  # one process: the command serves
        verified = httpx.post(f"{url}/verify", headers=bearer(ADMIN), json={"key": key})
        assert verified.json()["valid"] is True
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == EXITS[signum], err.decode(errors="replace")[-2000:]
    # Every line JSON (README, Settings); the one that says where it serves, among them.
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert {"event": "serving", "url": f"http://127.0.0.1:{port}", "pid": proc.pid}.items() <= (
        next(line for line in lines if line["event"] == "serving").items()
    )
    # The verification's lastUsedAt was pending: the graceful shutdown wrote it
    # (the CLI reads the database; after SIGKILL the key has no lastUsedAt).
    listed = keyhouse(data, "key", "list", "--account", account, "--json")
    expect_ok(listed)
    [row] = listed.json()["keys"]
    assert "lastUsedAt" in row, json.dumps(sorted(row))
