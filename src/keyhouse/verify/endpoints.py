"""``POST /verify``: one key verification, the hot path of the operator's platform."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from keyhouse.deps import AdminActorDep, RuntimeDep
from keyhouse.keys.verify import Verifier
from keyhouse.openapi import error_responses
from keyhouse.timeutil import format_ts
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
    valid verification counts as a use of the key (`lastUsedAt`). Needs an
    admin token."""
    verdict = await Verifier(runtime).verify(body.key, actor=actor)
    out: dict[str, Any] = {"valid": verdict.valid, "code": verdict.code}
    record = verdict.record
    if record is not None:
        out["keyId"] = record.id
        out["accountId"] = record.account_id
        if record.environment_id is not None:
            out["environmentId"] = record.environment_id
        out["keyType"] = record.key_type
        out["name"] = record.name
        if record.expires_at is not None:
            out["expiresAt"] = format_ts(record.expires_at)
    return JSONResponse(out)
