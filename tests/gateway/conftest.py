"""Fixtures of the gateway tests: a real upstream process, the gateway in-process
(httpx.ASGITransport) and as a real ``keyhouse gateway`` process."""

from __future__ import annotations

import os
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

from keyhouse.config import Settings
from keyhouse.gateway import create_gateway_app
from tests.factories import expect_error, settings_env
from tests.limits.conftest import free_port

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


def _wait_for(url: str, proc: subprocess.Popen[bytes], what: str) -> None:
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


def _stop(proc: subprocess.Popen[bytes]) -> None:
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
        _wait_for(f"{server.url}/__upstream/seen", proc, "the upstream server")
        yield server
    finally:
        _stop(proc)


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
        _wait_for(f"{url}/", proc, "keyhouse gateway")
        yield LiveGateway(url, proc.pid)
    finally:
        _stop(proc)


def expect_provider_error(response: httpx.Response, provider_code: str) -> dict[str, Any]:
    """502 provider_error naming the provider and what happened, with a fix."""
    __tracebackhide__ = True
    body = expect_error(response, 502, "provider_error")
    error = body["error"]
    assert error["provider"] == PROVIDER
    assert error["providerCode"] == provider_code, error["providerCode"]
    assert error["fix"]
    return body
