"""Fixtures of the gateway tests: a real upstream process, the gateway in-process
(httpx.ASGITransport) and as a real ``keyhouse gateway`` process."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.gateway import create_gateway_app
from keyhouse.runtime import Runtime
from tests.conftest import run_sync
from tests.factories import AccountWithKey, create_account, expect_error, settings_env
from tests.limits.conftest import free_port
from tests.limits.helpers import account_on_plan

ROOT = Path(__file__).resolve().parents[2]
PROVIDER = "acme-api"
# The address the in-process gateway's client comes from (TEST-NET-3, RFC 5737).
CLIENT_ADDRESS = "203.0.113.7"


@dataclass(frozen=True)
class Upstream:
    """The upstream process (tests/gateway/upstream_server.py): its two addresses."""

    url: str
    raw_url: str

    def seen(self, path: str) -> int:
        """How many requests to ``path`` reached the upstream."""
        answer = httpx.get(f"{self.url}/__upstream/seen", params={"path": path}, timeout=5)
        count: int = answer.json()["count"]
        return count

    def release(self, name: str) -> None:
        httpx.get(f"{self.url}/__upstream/release", params={"name": name}, timeout=5)


def wait_until_answering(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not answer within 60 s")
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    http_port, raw_port = free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.gateway.upstream_server", str(http_port), str(raw_port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    server = Upstream(f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{raw_port}")
    try:
        wait_until_answering(f"{server.url}/__upstream/seen", proc, "the upstream server")
        yield server
    finally:
        stop_process(proc)


@asynccontextmanager
async def in_process(
    settings: Settings, upstream_url: str, provider: str = PROVIDER
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the gateway app, running (its lifespan entered), in this process."""
    gateway = create_gateway_app(settings, upstream_url, provider)
    async with gateway.running():
        transport = httpx.ASGITransport(app=gateway, client=(CLIENT_ADDRESS, 4321))
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as c:
            yield c


@pytest.fixture
async def gateway(settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    """The gateway in front of the well-behaved upstream, on the test's keyhouse."""
    async with in_process(settings, upstream.url) as client:
        yield client


@dataclass(frozen=True)
class LiveGateway:
    url: str
    pid: int


@contextmanager
def gateway_process(
    settings: Settings, upstream_url: str, *args: str, **env: str
) -> Iterator[LiveGateway]:
    """A real ``keyhouse gateway`` process on the settings' keyhouse."""
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "keyhouse",
            "gateway",
            "--upstream",
            upstream_url,
            "--provider",
            PROVIDER,
            "--port",
            str(port),
            *args,
        ],
        env={**os.environ, **settings_env(settings), "KEYHOUSE_LOG_LEVEL": "warning", **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Any answer will do (a 401: no key); the gateway has no route of its own.
        wait_until_answering(f"{url}/", proc, "keyhouse gateway")
        yield LiveGateway(url, proc.pid)
    finally:
        stop_process(proc)


def expect_provider_error(response: httpx.Response, provider_code: str) -> dict[str, Any]:
    """502 provider_error naming the provider and what happened, with a fix."""
    __tracebackhide__ = True
    body = expect_error(response, 502, "provider_error")
    error = body["error"]
    assert error["provider"] == PROVIDER
    assert error["providerCode"] == provider_code, error["providerCode"]
    assert error["fix"]
    return body


def _module_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> Settings:
    data_dir = tmp_path_factory.mktemp("gateway") / "data"
    data_dir.mkdir(mode=0o700)
    if backend == "postgresql":
        return Settings(
            data_dir=data_dir,
            database_url=request.getfixturevalue("pg_url"),
            encryption_keys=f"test:{base64.b64encode(os.urandom(32)).decode()}",
            admin_tokens=f"kh_admin_{secrets.token_urlsafe(32)}",
        )
    template: Path = request.getfixturevalue("template_db")
    shutil.copyfile(template, data_dir / "keyhouse.db")
    (data_dir / "keyhouse.db").chmod(0o600)
    return Settings(data_dir=data_dir)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def live_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """A keyhouse of the module's own (a live gateway per module, not per test), on
    each backend: a copy of the migrated SQLite template, or the run's PostgreSQL."""
    return _module_settings(request, tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def sqlite_live_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """``live_settings`` on SQLite only."""
    return _module_settings(request, tmp_path_factory, "sqlite")


async def _new_account(settings: Settings, limits: dict[str, Any]) -> AccountWithKey:
    runtime = Runtime.build(settings, generate_secrets=False)
    try:
        if limits:
            return await account_on_plan(runtime, **limits)
        return await create_account(runtime)
    finally:
        await runtime.db.dispose()


def new_account(settings: Settings, **limits: Any) -> AccountWithKey:
    """An account made on the keyhouse of ``settings`` (from sync code: a live test)."""
    account: AccountWithKey = run_sync(lambda: _new_account(settings, limits))
    return account


async def _usage(settings: Settings, acc: AccountWithKey) -> int:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://keyhouse") as client:
            answer = await client.get("/account", headers=acc.auth)
    requests: int = answer.json()["usage"]["requests"]
    return requests


def saved_usage(settings: Settings, acc: AccountWithKey) -> int:
    """The account's usage this month as keyhouse's API reports it (what was saved)."""
    used: int = run_sync(lambda: _usage(settings, acc))
    return used
