"""``/environments``: named scopes inside the account."""

from __future__ import annotations

from fastapi import APIRouter

from keyhouse.environments.schemas import (
    CreateEnvironmentRequest,
    Environment,
    ListEnvironmentsResponse,
)
from keyhouse.environments.service import EnvironmentService
from keyhouse.http.pipeline import (
    DirectRoute,
    KeyActorDep,
    KeyIdempotency,
    MeteredCallerDep,
    SessionDep,
    require_scope,
)
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse

__all__ = ["router"]

router = APIRouter(prefix="/environments", tags=["environments"], route_class=DirectRoute)


@router.get(
    "",
    response_model=ListEnvironmentsResponse,
    summary="List environments",
    dependencies=[require_scope("environments:read")],
    responses=error_responses(400, 401, 402, 403, 429),
)
async def list_environments(caller: MeteredCallerDep, session: SessionDep) -> JSONResponse:
    """The account's environments, newest first. An environment-scoped key sees its own
    only. Needs the scope `environments:read`."""
    rows = await EnvironmentService(session).list(
        caller.account_id, scope_environment_id=caller.environment_id
    )
    envs = [Environment.from_row(row).model_dump() for row in rows]
    return JSONResponse({"environments": envs})


@router.post(
    "",
    response_model=Environment,
    status_code=201,
    summary="Create an environment",
    dependencies=[require_scope("environments:write"), KeyIdempotency],
    responses=error_responses(400, 401, 402, 403, 429, 409, 413, 415),
)
async def create_environment(
    body: CreateEnvironmentRequest,
    caller: MeteredCallerDep,
    actor: KeyActorDep,
    session: SessionDep,
) -> JSONResponse:
    """Creates a named environment. Needs an account-wide secret key, with the scope
    `environments:write`."""
    row = await EnvironmentService(session).create(
        caller.account_id, body.name, caller_environment_id=caller.environment_id, actor=actor
    )
    return JSONResponse(Environment.from_row(row).model_dump(), status_code=201)
