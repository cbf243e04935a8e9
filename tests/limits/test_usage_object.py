"""``limits.service.usage_object``: the usage member every surface shows."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from keyhouse.limits.plan import current_period
from keyhouse.limits.service import usage_object

PERIOD = current_period(datetime(2026, 11, 15, 12, tzinfo=UTC))


class TestUsageObject:
    def test_with_a_limit(self) -> None:
        # Member order is part of the bytes (POST /verify's usage).
        assert json.dumps(usage_object(7, PERIOD, limit=100)) == (
            '{"requests": 7, "limit": 100, "resetsAt": "2026-12-01T00:00:00.000Z"}'
        )

    def test_unlimited_leaves_limit_out(self) -> None:
        assert usage_object(7, PERIOD, limit=None) == {
            "requests": 7,
            "resetsAt": "2026-12-01T00:00:00.000Z",
        }

    def test_with_the_period_start(self) -> None:
        # GET /account's usage.
        assert json.dumps(usage_object(0, PERIOD, period_start=True)) == (
            '{"requests": 0, "periodStart": "2026-11-01T00:00:00.000Z", '
            '"resetsAt": "2026-12-01T00:00:00.000Z"}'
        )
