"""One live ``keyhouse serve`` per test module, for the client package's tests.

A real process (``tests/limits/conftest.py::served``) on a SQLite file of its
own, with an admin token and a verify-only token; each test makes the
accounts it needs through the client itself, so tests share the server and
nothing else. The client does not see which database keyhouse uses: the
server's own suite covers PostgreSQL.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from keyhouse_client import AsyncKeyhouse, Keyhouse

from keyhouse.config import Settings
from tests.limits.conftest import served

ADMIN_TOKEN = "kh_admin_client_tests_0123456789abcdef"
VERIFY_TOKEN = "kh_verify_client_tests_0123456789abcdef"


@dataclass(frozen=True)
class Live:
    url: str
    admin_token: str
    verify_token: str


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("keyhouse"))
    with served(
        settings, 1, KEYHOUSE_ADMIN_TOKENS=ADMIN_TOKEN, KEYHOUSE_VERIFY_TOKENS=VERIFY_TOKEN
    ) as [url]:
        yield Live(url, ADMIN_TOKEN, VERIFY_TOKEN)


@pytest.fixture
def admin(live: Live) -> Iterator[Keyhouse]:
    with Keyhouse(live.url, live.admin_token) as client:
        yield client


@pytest.fixture
async def async_admin(live: Live) -> AsyncIterator[AsyncKeyhouse]:
    async with AsyncKeyhouse(live.url, live.admin_token) as client:
        yield client


def unique(name: str) -> str:
    """A name no other test of the module uses (accounts share one server)."""
    return f"{name} {secrets.token_hex(4)}"
