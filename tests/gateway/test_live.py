"""A real ``keyhouse gateway`` process (one per backend, for the module) in front of
the real upstream process: streaming both ways in bounded memory, the request
line as sent, metering saved to the database.
"""

from __future__ import annotations

import secrets
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from keyhouse.config import Settings
from tests.gateway.conftest import (
    LiveGateway,
    Upstream,
    gateway_process,
    new_account,
    saved_usage,
)

MIB = 1024 * 1024
# The bound the gateway's memory must stay under while 100 MiB pass each way:
# buffered, one body alone would be 100 MiB more.
MEMORY_BOUND = 150 * 1000 * 1000


@pytest.fixture(scope="module")
def live(live_settings: Settings, upstream: Upstream) -> Iterator[LiveGateway]:
    with gateway_process(live_settings, upstream.url, KEYHOUSE_USAGE_FLUSH_SECONDS="0.1") as gw:
        yield gw


def peak_rss(pid: int) -> int:
    """The process's peak resident memory so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/PID/status")


def test_a_response_streams_before_the_upstream_finishes(
    live: LiveGateway, live_settings: Settings, upstream: Upstream
) -> None:
    acc = new_account(live_settings)
    name = secrets.token_hex(6)
    with httpx.stream(
        "GET", f"{live.url}/stream?name={name}", headers=acc.auth, timeout=10
    ) as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        # The upstream holds the rest until released: a gateway that buffered
        # would time out here instead.
        assert next(chunks) == b"first\n"
        upstream.release(name)
        assert b"".join(chunks) == b"rest\n"


def test_100_mib_each_way_in_bounded_memory(live: LiveGateway, live_settings: Settings) -> None:
    acc = new_account(live_settings)
    with httpx.Client(base_url=live.url, headers=acc.auth, timeout=60) as client:
        assert client.get("/echo/warm-up").status_code == 200
        before = peak_rss(live.pid)

        def body() -> Iterator[bytes]:
            block = b"u" * MIB
            for _ in range(100):
                yield block

        headers = {"Content-Length": str(100 * MIB)}
        uploaded = client.post("/count", content=body(), headers=headers)
        assert uploaded.status_code == 200
        assert uploaded.json() == {"bytes": 100 * MIB}

        received = 0
        with client.stream("GET", f"/bytes?n={100 * MIB}") as download:
            assert download.status_code == 200
            for chunk in download.iter_raw():
                received += len(chunk)
        assert received == 100 * MIB
    grown = peak_rss(live.pid) - before
    assert grown < MEMORY_BOUND, f"the gateway's peak memory grew by {grown / MIB:.0f} MiB"


def test_dot_segments_sent_as_such_are_refused(live: LiveGateway, live_settings: Settings) -> None:
    acc = new_account(live_settings)
    port = int(live.url.rsplit(":", 1)[1])
    # Literal dots, and reviewer r14's encoded slashes and a backslash, as sent: what
    # uvicorn hands on is what the gateway checks (test_paths has every spelling).
    for target in (b"/a/../b", b"/./b", b"/a/..", b"/a%2F..%2F..%2Fadmin", b"/a\\..\\b"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"GET " + target + b" HTTP/1.1\r\nHost: gateway\r\n"
                b"Authorization: Bearer " + acc.key.encode() + b"\r\nConnection: close\r\n\r\n"
            )
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 "), target
        assert b'"code":"validation_error"' in answer


def test_every_answered_request_is_counted(live: LiveGateway, live_settings: Settings) -> None:
    acc = new_account(live_settings)
    with httpx.Client(base_url=live.url, headers=acc.auth, timeout=10) as client:
        statuses = [client.get(f"/echo/{i}").status_code for i in range(4)]
        statuses.append(client.get("/status/404").status_code)
    assert statuses == [200, 200, 200, 200, 404]
    # Saved every 0.1 s (KEYHOUSE_USAGE_FLUSH_SECONDS): poll, do not sleep.
    deadline = time.monotonic() + 10
    while (used := saved_usage(live_settings, acc)) != 5:
        assert time.monotonic() < deadline, f"usage {used}, expected 5"
        time.sleep(0.1)


def test_identity_reaches_the_upstream(live: LiveGateway, live_settings: Settings) -> None:
    acc = new_account(live_settings)
    spoofed = {**acc.auth, "X-Keyhouse-Account-Id": "acc_spoofed", "X-Forwarded-For": "1.2.3.4"}
    echo = httpx.get(f"{live.url}/echo/who", headers=spoofed, timeout=10).json()
    headers = dict(echo["headers"])
    assert headers["x-keyhouse-account-id"] == acc.account_id
    assert headers["x-keyhouse-key-id"] == acc.key_id
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert "authorization" not in headers
