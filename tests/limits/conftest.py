"""Fixtures for limits: a real Redis (a database number of its own), a private
Redis for fault tests, and real servers.

With ``CI=true`` a test that needs Redis fails when Redis does not answer;
elsewhere it is skipped with the reason. Fault tests never pause, stop or
flush the machine's Redis (other test runs use it): ``private_redis``
starts a ``redis-server`` of their own, on a free port, without persistence.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
import redis

from keyhouse.config import Settings
from tests.factories import settings_env

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
# A database number of its own: tests may flush it without touching anything else.
REDIS_DB = 13


def _redis_reachable() -> str | None:
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_timeout=1).ping()
    except Exception as exc:  # the reason is what the skip says
        return f"Redis at {REDIS_HOST}:{REDIS_PORT} does not answer ({type(exc).__name__})"
    return None


@pytest.fixture
def redis_url() -> Iterator[str]:
    problem = _redis_reachable()
    if problem is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI needs it (.ci/run starts it)")
        pytest.skip(problem)
    client = redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=REDIS_DB)
    client.flushdb()
    yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    client.flushdb()
    client.close()


REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class PrivateRedis:
    """A ``redis-server`` of the test's own: pause it, stop it, start it again empty."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self, timeout: float = 5) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=timeout)

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                if self.client(timeout=0.5).ping():
                    return
            except redis.RedisError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)

    def pause(self, milliseconds: int) -> None:
        """Every client's commands wait ``milliseconds`` (CLIENT PAUSE ... ALL)."""
        self.client().client_pause(milliseconds, all=True)

    def restart_empty(self) -> None:
        """SHUTDOWN NOSAVE, then start again on the same port: every counter is lost."""
        assert self.proc is not None
        # The server closes the connection as it exits.
        with contextlib.suppress(redis.ConnectionError):
            self.client().shutdown(nosave=True)
        self.proc.wait(timeout=10)
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    if not os.path.exists(REDIS_SERVER):
        problem = f"no redis-server at {REDIS_SERVER}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{problem}; CI needs it")
        pytest.skip(problem)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = PrivateRedis(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def served(settings: Settings, count: int, **env: str) -> Iterator[list[str]]:
    """``count`` real ``keyhouse serve`` processes on the settings' database; yields URLs."""
    procs: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    base_env = {
        **os.environ,
        **settings_env(settings),
        "KEYHOUSE_LOG_LEVEL": "warning",
        **env,
    }
    try:
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "keyhouse", "serve", "--port", str(port)],
                    env=base_env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 60
        for url, proc in zip(urls, procs, strict=True):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"keyhouse serve exited with {proc.returncode}")
                try:
                    if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError("keyhouse serve did not start within 60 s")
                time.sleep(0.05)
        yield urls
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
