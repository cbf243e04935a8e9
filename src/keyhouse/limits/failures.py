"""Failed authentications per client address: guessing keys gets slowed.

A client that presents more than ``limit`` keys (or admin tokens) that do
not pass within a minute gets 429 ``rate_limited`` instead of 401 for the
rest of that minute. Keys that pass are never refused here: a client that
mistyped a key 300 times can still use its right one, and other addresses
are not affected. Counted per process (with N workers a client gets up to N
times the limit), in fixed one-minute windows; the table of addresses is
bounded.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

__all__ = ["FailedAuthLimiter"]

_WINDOW = 60.0
_MAX_ADDRESSES = 100_000


class FailedAuthLimiter:
    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._windows: dict[str, tuple[float, int]] = {}

    def record_failure(self, address: str) -> int | None:
        """Count one failure; seconds to wait (Retry-After) when over the limit."""
        if self.limit <= 0:
            return None
        now = self._clock()
        start, count = self._windows.get(address, (now, 0))
        if now - start >= _WINDOW:
            start, count = now, 0
        count += 1
        self._windows[address] = (start, count)
        if len(self._windows) > _MAX_ADDRESSES:
            self._prune(now)
        if count > self.limit:
            return max(1, math.ceil(start + _WINDOW - now))
        return None

    def _prune(self, now: float) -> None:
        for address in [a for a, (s, _) in self._windows.items() if now - s >= _WINDOW]:
            del self._windows[address]
