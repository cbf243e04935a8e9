"""Metering: counting a call against the plan, and the usage object that reports it.

``meter`` counts one call of the account API (``http/pipeline.py``'s
``metered_call``) and ``unmeter`` gives it back when the call is answered
with a 5xx; ``usage_object`` is the one builder of the usage member that
``POST /verify``, ``GET /account`` and ``keyhouse account usage`` show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from keyhouse import errors
from keyhouse.limits.limiter import RateState, Ticket
from keyhouse.limits.plan import Consumer, Period
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["Metered", "meter", "ratelimit_headers", "unmeter", "usage_object"]


@dataclass(frozen=True, slots=True)
class Metered:
    """The outcome of counting one call."""

    # The RateLimit-* header fields for the response, refused or not.
    headers: dict[str, str]
    # 429 rate_limited or 402 usage_limit_exceeded; None: the call was counted.
    refusal: errors.KeyhouseError | None
    # Where it was counted (None when refused): what ``unmeter`` gives back.
    ticket: Ticket | None = None


async def meter(runtime: Runtime, caller: Consumer) -> Metered:
    """Count the call against the account's plan. A refused call consumes nothing."""
    admission = await runtime.limiter.admit(caller.account_id, caller.key_id, caller.plan, utcnow())
    headers = ratelimit_headers(admission.rate) if admission.rate is not None else {}
    if admission.allowed:
        return Metered(headers, None, admission.ticket)
    if admission.refusal == "rate" and admission.rate is not None:
        refusal: errors.KeyhouseError = errors.RateLimited(
            headers={"Retry-After": str(admission.rate.retry_after or 1)},
            fix=(
                f"This key may make {caller.plan.rate_per_second} requests per second "
                f"(bursts of {admission.rate.limit}); retry after "
                f"{admission.rate.retry_after or 1} s (Retry-After)."
            ),
        )
    else:
        refusal = errors.UsageLimitExceeded(
            f"The account has used its {caller.plan.monthly_requests} requests for "
            f"{admission.period.key}.",
            fix=(
                f"Usage resets at {format_ts(admission.period.end)}; ask the operator for a "
                "larger plan to continue before then. GET /account shows the usage."
            ),
        )
    return Metered(headers, refusal)


async def unmeter(runtime: Runtime, metered: Metered) -> None:
    """Give back a counted call, its quota and its token: it was answered with a 5xx."""
    if metered.ticket is not None:
        await runtime.limiter.refund(metered.ticket)


def ratelimit_headers(rate: RateState) -> dict[str, str]:
    """The RateLimit header fields (IETF draft), per key."""
    return {
        "RateLimit-Limit": str(rate.limit),
        "RateLimit-Remaining": str(rate.remaining),
        "RateLimit-Reset": str(rate.reset),
    }


def usage_object(
    requests: int, period: Period, *, limit: int | None = None, period_start: bool = False
) -> dict[str, Any]:
    """``{requests, limit?, periodStart?, resetsAt}``: an account's usage this period.

    ``limit`` is the plan's monthly requests, left out when None (unlimited,
    or, for ``GET /account``, given beside it in ``limits``). ``period_start``
    adds when the period began. Members in this order: responses are pinned
    byte for byte.
    """
    usage: dict[str, Any] = {"requests": requests}
    if limit is not None:
        usage["limit"] = limit
    if period_start:
        usage["periodStart"] = format_ts(period.start)
    usage["resetsAt"] = format_ts(period.end)
    return usage
