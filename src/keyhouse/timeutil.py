"""Time on the wire: ISO 8601 UTC with exactly three decimals and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_ts", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(value: datetime) -> str:
    """``2026-11-26T19:21:17.123Z`` (milliseconds truncated, never rounded up)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # isoformat truncates to milliseconds and is ~3x faster than strftime,
    # which was 11-16% of a large GET /keys (profiles in issue 4).
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"
