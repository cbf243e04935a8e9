"""Time on the wire: ISO 8601 UTC with exactly three decimals and ``Z``."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_ts", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


def format_ts(value: datetime) -> str:
    """``2026-11-26T19:21:17.123Z`` (milliseconds truncated, never rounded up)."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
