"""A real ``keyhouse gateway`` process in front of an upstream that misbehaves:
each failure as the client sees it over a real connection.

One process for the module, on SQLite (what is tested here is the connection
to the upstream; test_proxy.py runs the same cases on both backends in-process).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from keyhouse.config import Settings
from tests.gateway.conftest import (
    LiveGateway,
    Upstream,
    expect_provider_error,
    gateway_process,
    new_account,
)


@pytest.fixture(scope="module")
def live_raw(sqlite_live_settings: Settings, upstream: Upstream) -> Iterator[LiveGateway]:
    with gateway_process(
        sqlite_live_settings, upstream.raw_url, KEYHOUSE_GATEWAY_READ_TIMEOUT_SECONDS="0.5"
    ) as gateway:
        yield gateway


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/close", "reset"),
        ("/reset", "reset"),
        ("/never", "timeout"),
        ("/garbage", "protocol_error"),
    ],
)
def test_a_failure_before_the_answer_is_502(
    live_raw: LiveGateway, sqlite_live_settings: Settings, path: str, code: str
) -> None:
    acc = new_account(sqlite_live_settings)
    response = httpx.get(f"{live_raw.url}{path}", headers=acc.auth, timeout=10)
    expect_provider_error(response, code)


def test_a_failure_within_the_answer_cuts_it(
    live_raw: LiveGateway, sqlite_live_settings: Settings
) -> None:
    """The status was sent: the client sees the answer end early, never a whole one."""
    acc = new_account(sqlite_live_settings)
    with httpx.stream("GET", f"{live_raw.url}/cut", headers=acc.auth, timeout=10) as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == "1000000"
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()
    # The gateway goes on serving.
    expect_provider_error(httpx.get(f"{live_raw.url}/close", headers=acc.auth, timeout=10), "reset")
