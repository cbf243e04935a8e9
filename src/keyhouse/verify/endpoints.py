"""``POST /verify``: one key verification, the hot path of the operator's platform."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from keyhouse.deps import AdminActorDep, RuntimeDep
from keyhouse.keys.verify import Verifier
from keyhouse.openapi import error_responses
from keyhouse.timeutil import format_ts, utcnow
from keyhouse.verify.schemas import VerifyRequest, VerifyResponse

__all__ = ["router"]

router = APIRouter(tags=["verify"])


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Verify a key",
    responses=error_responses(400, 401, 403, 413, 415),
)
async def verify_key(
    body: VerifyRequest, actor: AdminActorDep, runtime: RuntimeDep
) -> JSONResponse:
    """Answers whether a key your user sent may pass, and whose it is. Always
    200 for a well-formed request: the verdict is in `valid` and `code`. A
    valid verification counts as a use of the key (`lastUsedAt`) and against
    the account's plan: over its monthly requests the code is
    `usage_exceeded`, over the key's rate limit `rate_limited` (a refused
    verification is not counted). Needs an admin token."""
    verdict = await Verifier(runtime).verify(body.key, actor=actor)
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
        usage: dict[str, Any] = {"requests": admission.used}
        if record.plan.monthly_requests is not None:
            usage["limit"] = record.plan.monthly_requests
        usage["resetsAt"] = format_ts(admission.period.end)
        extra["usage"] = usage
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
    return JSONResponse(out)
