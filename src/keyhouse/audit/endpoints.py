"""``GET /events``: the account's audit log; ``GET /admin/events``: every account's."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from keyhouse.audit.schemas import ListAdminEventsResponse, ListEventsResponse
from keyhouse.audit.service import AuditService, event_object
from keyhouse.http.pipeline import AdminActorDep, MeteredCallerDep, SessionDep, require_scope
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse

__all__ = ["admin_router", "router"]

router = APIRouter(prefix="/events", tags=["events"])
admin_router = APIRouter(prefix="/admin/events", tags=["operator"])
EVENT_ID_PATTERN = r"^evt_[0-9A-HJKMNP-TV-Z]{26}$"
ACCOUNT_ID_PATTERN = r"^acc_[0-9A-HJKMNP-TV-Z]{26}$"


@router.get(
    "",
    response_model=ListEventsResponse,
    summary="List audit events",
    dependencies=[require_scope("events:read")],
    responses=error_responses(400, 401, 402, 403, 429),
)
async def list_events(
    caller: MeteredCallerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Events per page (1-100).")] = 20,
    startingAfter: Annotated[
        str | None,
        Query(pattern=EVENT_ID_PATTERN, description="An event id: the page starts after it."),
    ] = None,
) -> JSONResponse:
    """The account's audit log, newest first, a page at a time: pass the last
    event's id as `startingAfter` while `hasMore` is true. An
    environment-scoped key sees its environment's events only. Needs the scope
    `events:read`."""
    rows, has_more = await AuditService(session).list(
        caller.account_id,
        limit=limit,
        starting_after=startingAfter,
        scope_environment_id=caller.environment_id,
    )
    return JSONResponse({"events": [event_object(r) for r in rows], "hasMore": has_more})


@admin_router.get(
    "",
    response_model=ListAdminEventsResponse,
    summary="List every account's audit events",
    responses=error_responses(400, 401, 403, 429),
)
async def admin_list_events(
    actor: AdminActorDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100, description="Events per page (1-100).")] = 20,
    startingAfter: Annotated[
        str | None,
        Query(pattern=EVENT_ID_PATTERN, description="An event id: the page starts after it."),
    ] = None,
    accountId: Annotated[
        str | None, Query(pattern=ACCOUNT_ID_PATTERN, description="Only this account's events.")
    ] = None,
) -> JSONResponse:
    """The audit log of every account (or of `accountId`), newest first, paged
    as `GET /events` is; each event names its `accountId` (an event of keyhouse as a
    whole, such as `scopes.updated`, has none). Needs an admin token."""
    rows, has_more = await AuditService(session).list(
        accountId, limit=limit, starting_after=startingAfter
    )
    events = [event_object(r, with_account=True) for r in rows]
    return JSONResponse({"events": events, "hasMore": has_more})
