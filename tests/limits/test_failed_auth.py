"""Guessing keys from one address gets 429; its valid keys and other addresses do not."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from fastapi import FastAPI

from keyhouse.app import create_app
from keyhouse.config import Settings
from keyhouse.limits.failures import FailedAuthLimiter
from keyhouse.runtime import Runtime
from tests.factories import bearer, create_account, expect_error


@pytest.fixture
async def strict_app(make_settings: Callable[..., Settings]) -> AsyncIterator[FastAPI]:
    app = create_app(make_settings(auth_failures_per_minute=5))
    async with app.router.lifespan_context(app):
        yield app


def client_from(app: FastAPI, address: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://t")


async def test_guessing_is_slowed_for_that_address_only(strict_app: FastAPI) -> None:
    runtime: Runtime = strict_app.state.runtime
    acc = await create_account(runtime)
    guess = bearer(runtime.key_format.generate("secret"))
    async with (
        client_from(strict_app, "10.0.0.1") as attacker,
        client_from(strict_app, "10.0.0.2") as other,
    ):
        for _ in range(5):
            expect_error(await attacker.get("/keys", headers=guess), 401, "invalid_api_key")
        slowed = await attacker.get("/keys", headers=guess)
        expect_error(slowed, 429, "rate_limited")
        assert 1 <= int(slowed.headers["retry-after"]) <= 60
        # Admin tokens are guesses too.
        expect_error(
            await attacker.get("/admin/accounts", headers=bearer("x" * 30)), 429, "rate_limited"
        )
        # The same address's valid key still works; another address is not slowed.
        assert (await attacker.get("/keys", headers=acc.auth)).status_code == 200
        expect_error(await other.get("/keys", headers=guess), 401, "invalid_api_key")


async def test_no_header_is_not_a_guess(strict_app: FastAPI) -> None:
    async with client_from(strict_app, "10.0.0.3") as client:
        for _ in range(10):
            expect_error(await client.get("/keys"), 401, "missing_api_key")


def test_window_resets_after_a_minute() -> None:
    now = [1000.0]
    limiter = FailedAuthLimiter(2, clock=lambda: now[0])
    assert [limiter.record_failure("a") for _ in range(3)] == [None, None, 60]
    now[0] += 59.5
    assert limiter.record_failure("a") == 1
    now[0] += 1
    assert limiter.record_failure("a") is None


def test_zero_means_no_limit() -> None:
    limiter = FailedAuthLimiter(0)
    assert all(limiter.record_failure("a") is None for _ in range(1000))
