"""Every line ``keyhouse serve`` writes is JSON, startup and shutdown included (issue 13).

uvicorn's own loggers wrote plain text ("INFO: Started server process")
between keyhouse's JSON lines, and ``serve`` printed its own in prose. Real
processes here, one and ``--workers 2``, at the default level (info): every
line of stderr from the migration to the last worker's exit parses as a
JSON object with an event, a level and a timestamp. And an outage's expected
refusals (``/readyz`` 503, a request's 503) are warnings, never errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.runtime import Runtime
from tests.factories import create_account, listener
from tests.limits.conftest import free_port
from tests.proxy import tcp_proxy

ADMIN = "kh_admin_serve_logs_test_0123456789abcdef"


def _lines(err: bytes) -> list[dict[str, Any]]:
    parsed = []
    for raw in err.decode().splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)  # fails the test on any line that is not JSON
        assert isinstance(line, dict), raw
        assert {"event", "level", "timestamp"} <= line.keys(), raw
        parsed.append(line)
    return parsed


@pytest.mark.parametrize("workers", [1, 2])
def test_every_line_is_json(tmp_path: Path, workers: int) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYHOUSE_")}
    env.update(KEYHOUSE_DATA_DIR=str(tmp_path / "data"), KEYHOUSE_ADMIN_TOKENS=ADMIN)
    proc = subprocess.Popen(
        [sys.executable, "-m", "keyhouse", "serve", "--port", str(port), "--workers", str(workers)],
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
                httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "keyhouse serve did not start within 60 s"
                time.sleep(0.05)
        assert httpx.get(f"{url}/keys?keytype=public").status_code == 400
        assert httpx.get(f"{url}/nothing").status_code == 404
        assert httpx.get(f"{url}/keys", headers={"Authorization": "Bearer x"}).status_code == 401
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    lines = _lines(err)
    events = [line["event"] for line in lines]
    # The migration (alembic), where it serves, uvicorn's start and stop of each process.
    assert any(line.get("logger") == "alembic.runtime.migration" for line in lines), events
    assert "data_directory" in events
    assert "serving" in events
    assert events.count("Application startup complete.") == workers, events
    finished = [e for e in events if e.startswith("Finished server process")]
    assert len(finished) == workers, events
    assert [line["status"] for line in lines if line["event"] == "request"].count(400) == 1
    if workers > 1:
        assert events[-1] == "stopped"
        assert "workers_without_redis" in events
    assert {line["level"] for line in lines} <= {"info", "warning"}, events


@pytest.mark.postgresql_only
async def test_an_outage_is_warned_not_an_error(
    make_settings: Any, capfd: pytest.CaptureFixture[str]
) -> None:
    """PostgreSQL behind a proxy the test cuts: /readyz and a request that needs the
    database answer 503 and log warnings; no line is an error."""
    url = make_settings().database_url
    assert url is not None
    host_port = url.split("@", 1)[1].split("/", 1)[0]
    host, port = host_port.rsplit(":", 1)
    async with tcp_proxy(host, int(port)) as proxy:
        settings: Settings = make_settings(
            database_url=url.replace(host_port, f"127.0.0.1:{proxy.port}", 1),
            db_connect_timeout_seconds=1,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            runtime: Runtime = app.state.runtime
            await asyncio.wait_for(listener(runtime).connected.wait(), 10)
            acc = await create_account(runtime)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                assert (await client.get("/readyz")).status_code == 200
                capfd.readouterr()
                proxy.cut()
                ready = await client.get("/readyz")
                account = await client.get("/account", headers=acc.auth)
            captured = capfd.readouterr().err
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "service_unavailable"
    assert account.status_code == 503
    lines = _lines(captured.encode())
    levels = {line["event"]: line["level"] for line in lines}
    assert levels.get("readyz_database_unreachable") == "warning", levels
    assert levels.get("service_unavailable") == "warning", levels
    assert [line for line in lines if line["level"] == "error"] == []
