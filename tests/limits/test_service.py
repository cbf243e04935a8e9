"""``meter``: one call of the account API counted against the plan, or refused.

Called directly with a limiter on a clock the test moves (no refill while
it runs), so the RateLimit-* fields are exact. The HTTP tests (test_quota,
test_rate) pin the responses under real time and concurrency; these pin
what ``meter`` returns and that a refused call, 402 or 429, consumes
nothing: neither quota nor a token.
"""

from __future__ import annotations

import pytest

from keyhouse import errors
from keyhouse.ids import new_id
from keyhouse.keys.verify import Caller
from keyhouse.limits.limiter import Limiter, Mode
from keyhouse.limits.plan import Plan, current_period
from keyhouse.limits.repository import UsageRepository
from keyhouse.limits.service import Metered, meter
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow
from tests.factories import bare_account

MODES: list[Mode] = ["memory", "database"]


class Clock:
    """``time.monotonic`` for the limiter's token buckets, moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=MODES)
def limited(
    request: pytest.FixtureRequest, runtime: Runtime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> Runtime:
    """The runtime with a limiter of the given mode on the test's clock."""
    mode: Mode = request.param
    monkeypatch.setattr(runtime, "limiter", Limiter(runtime.db, mode=mode, clock=clock))
    return runtime


async def caller_on(runtime: Runtime, plan: Plan) -> Caller:
    account_id = await bare_account(runtime)
    return Caller(account_id, new_id("key")[0], "secret", None, plan)


async def used(runtime: Runtime, caller: Caller) -> int:
    count, _ = await runtime.limiter.used(caller.account_id, utcnow())
    return count


def rate_fields(metered: Metered) -> tuple[str, str, str] | None:
    h = metered.headers
    if not h:
        return None
    return h["RateLimit-Limit"], h["RateLimit-Remaining"], h["RateLimit-Reset"]


def expect_refusal(
    metered: Metered, error: type[errors.KeyhouseError], code: str
) -> errors.KeyhouseError:
    __tracebackhide__ = True
    refusal = metered.refusal
    assert refusal is not None, "the call was counted, not refused"
    assert type(refusal) is error, f"{type(refusal).__name__}, expected {error.__name__}"
    assert refusal.code == code
    return refusal


class TestQuota:
    async def test_counted_up_to_the_quota_then_402_that_uses_nothing(
        self, limited: Runtime
    ) -> None:
        caller = await caller_on(limited, Plan(monthly_requests=2))
        for expected in [1, 2]:
            metered = await meter(limited, caller)
            assert (metered.refusal, metered.headers) == (None, {})
            assert await used(limited, caller) == expected
        for _ in range(2):
            refusal = expect_refusal(
                await meter(limited, caller), errors.UsageLimitExceeded, "usage_limit_exceeded"
            )
            assert refusal.status_code == 402
            assert await used(limited, caller) == 2

    async def test_without_limits_every_call_counts(self, limited: Runtime) -> None:
        caller = await caller_on(limited, Plan())
        for _ in range(3):
            metered = await meter(limited, caller)
            assert (metered.refusal, metered.headers) == (None, {})
        assert await used(limited, caller) == 3

    async def test_a_402_takes_no_token(self, limited: Runtime) -> None:
        caller = await caller_on(limited, Plan(monthly_requests=1, rate_per_second=1, burst=5))
        assert rate_fields(await meter(limited, caller)) == ("5", "4", "1")
        for _ in range(3):
            metered = await meter(limited, caller)
            expect_refusal(metered, errors.UsageLimitExceeded, "usage_limit_exceeded")
            assert rate_fields(metered) == ("5", "4", "1")


class TestRate:
    async def test_bucket_fields_then_429_with_retry_after(
        self, limited: Runtime, clock: Clock
    ) -> None:
        caller = await caller_on(limited, Plan(monthly_requests=100, rate_per_second=1, burst=2))
        first, second = await meter(limited, caller), await meter(limited, caller)
        assert (first.refusal, second.refusal) == (None, None)
        assert rate_fields(first) == ("2", "1", "1")
        assert rate_fields(second) == ("2", "0", "2")

        refused = await meter(limited, caller)
        refusal = expect_refusal(refused, errors.RateLimited, "rate_limited")
        assert refusal.status_code == 429
        assert refusal.headers == {"Retry-After": "1"}
        assert rate_fields(refused) == ("2", "0", "2")
        # Refused: no quota used.
        assert await used(limited, caller) == 2

        clock.now += 1.0  # one token back
        again = await meter(limited, caller)
        assert again.refusal is None
        assert rate_fields(again) == ("2", "0", "2")
        assert await used(limited, caller) == 3

    async def test_buckets_are_per_key_the_quota_per_account(self, limited: Runtime) -> None:
        plan = Plan(monthly_requests=3, rate_per_second=1, burst=1)
        caller = await caller_on(limited, plan)
        other_key = Caller(caller.account_id, new_id("key")[0], "public", None, plan)
        assert (await meter(limited, caller)).refusal is None
        expect_refusal(await meter(limited, caller), errors.RateLimited, "rate_limited")
        assert (await meter(limited, other_key)).refusal is None
        assert await used(limited, caller) == 2


async def test_database_mode_counts_in_the_database(
    runtime: Runtime, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Several processes share the quota only through the usage row.
    monkeypatch.setattr(runtime, "limiter", Limiter(runtime.db, mode="database", clock=clock))
    caller = await caller_on(runtime, Plan(monthly_requests=2))
    results = [(await meter(runtime, caller)).refusal is None for _ in range(3)]
    assert results == [True, True, False]
    async with runtime.db.session(write=False) as session:
        stored = await UsageRepository(session, is_sqlite=runtime.db.is_sqlite).get(
            caller.account_id, current_period(utcnow()).key
        )
    assert stored == 2
