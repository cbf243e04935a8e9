"""``POST /verify``: one key verification, the hot path of the operator's platform."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from keyhouse.http.pipeline import (
    AdminActorDep,
    DirectRoute,
    RuntimeDep,
    direct,
    get_admin_actor,
    get_runtime,
    read_body,
)
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse
from keyhouse.verify.schemas import VerifyRequest, VerifyResponse
from keyhouse.verify.service import verify_key

__all__ = ["router"]

router = APIRouter(tags=["verify"], route_class=DirectRoute)


async def _verify(request: Request) -> Response:
    """``verify_endpoint``'s parameters, from the pipeline's steps."""
    runtime = await get_runtime(request)
    actor = await get_admin_actor(request, runtime)
    body = await read_body(request, VerifyRequest)
    return await verify_endpoint(body, actor, runtime)


@router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Verify a key",
    responses=error_responses(400, 401, 403, 413, 415, 429),
)
@direct(_verify)
async def verify_endpoint(
    body: VerifyRequest, actor: AdminActorDep, runtime: RuntimeDep
) -> JSONResponse:
    """Answers whether a key your user sent may pass, and whose it is. Always
    200 for a well-formed request: the verdict is in `valid` and `code`. A
    valid verification counts as a use of the key (`lastUsedAt`) and against
    the account's plan: over its monthly requests the code is
    `usage_exceeded`, over the key's rate limit `rate_limited` (a refused
    verification is not counted). Needs an admin token."""
    return JSONResponse(await verify_key(runtime, body.key, actor))
