"""Plans and periods: what an account may use, and when its usage resets."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

__all__ = ["Consumer", "Period", "Plan", "current_period"]


@dataclass(frozen=True, slots=True)
class Plan:
    """An account's limits that verification enforces; None is unlimited."""

    monthly_requests: int | None = None
    rate_per_second: int | None = None
    burst: int | None = None

    @property
    def bucket_size(self) -> int | None:
        """Tokens a full bucket holds: ``burst``, or one second's worth."""
        if self.rate_per_second is None:
            return None
        return self.burst if self.burst is not None else self.rate_per_second


class Consumer(Protocol):
    """Who a metered call is counted against: one key of one account, and its plan.

    The keys package's ``Caller`` is one; declared here so that limits need
    not import keys (keys imports limits: verification reports usage, and
    every KeyRecord carries a Plan).
    """

    @property
    def account_id(self) -> str: ...
    @property
    def key_id(self) -> str: ...
    @property
    def plan(self) -> Plan: ...


@dataclass(frozen=True, slots=True)
class Period:
    """A UTC calendar month: usage is counted per period and resets at ``end``."""

    key: str  # "2026-11"
    start: datetime
    end: datetime

    def seconds_left(self, now: datetime) -> int:
        return max(0, int((self.end - now).total_seconds()))


def current_period(now: datetime) -> Period:
    now = now.astimezone(UTC)
    return _month(now.year, now.month)


# Every metered request asks for its period: building it each time was
# ~2 us of a ~50 us POST /verify (cProfile); a month's Period never changes.
@functools.lru_cache(maxsize=4)
def _month(year: int, month: int) -> Period:
    start = datetime(year, month, 1, tzinfo=UTC)
    end = (
        datetime(year + 1, 1, 1, tzinfo=UTC)
        if month == 12
        else datetime(year, month + 1, 1, tzinfo=UTC)
    )
    return Period(f"{year:04d}-{month:02d}", start, end)
