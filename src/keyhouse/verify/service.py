"""The verdict of ``POST /verify`` as a JSON-ready dict: one function for both paths.

The FastAPI route and the fast path (``verify/fastpath.py``) call this, so a
verdict is the same whichever answered.
"""

from __future__ import annotations

from typing import Any

from keyhouse.audit.service import Actor
from keyhouse.keys.verify import Verifier
from keyhouse.limits.service import usage_object
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["verify_key"]


async def verify_key(runtime: Runtime, key: str, actor: Actor | None) -> dict[str, Any]:
    verdict = await Verifier(runtime).verify(key, actor=actor)
    out: dict[str, Any] = {"valid": verdict.valid, "code": verdict.code}
    record = verdict.record
    extra: dict[str, Any] = {}
    if verdict.valid and record is not None:
        # A verification counts against the account's plan, like an API call.
        admission = await runtime.limiter.admit(record.account_id, record.id, record.plan, utcnow())
        if not admission.allowed:
            code = "usage_exceeded" if admission.refusal == "usage" else "rate_limited"
            out = {"valid": False, "code": code}
        if admission.rate is not None:
            rate = admission.rate
            extra["ratelimit"] = {
                "limit": rate.limit,
                "remaining": rate.remaining,
                "reset": rate.reset,
            }
        extra["usage"] = usage_object(
            admission.used, admission.period, limit=record.plan.monthly_requests
        )
    if record is not None:
        out["keyId"] = record.id
        out["accountId"] = record.account_id
        if record.environment_id is not None:
            out["environmentId"] = record.environment_id
        out["keyType"] = record.key_type
        out["name"] = record.name
        if record.expires_at is not None:
            out["expiresAt"] = format_ts(record.expires_at)
    out.update(extra)
    return out
