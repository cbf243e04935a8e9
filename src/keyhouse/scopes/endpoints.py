"""The operator API for the scope catalog (``/admin/scopes``)."""

from __future__ import annotations

from fastapi import APIRouter

from keyhouse.http.pipeline import AdminActorDep, DirectRoute, SessionDep
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse
from keyhouse.scopes.schemas import Catalog, PutCatalogRequest
from keyhouse.scopes.service import Entry, ScopeService, catalog_object

__all__ = ["admin_router"]

admin_router = APIRouter(prefix="/admin/scopes", tags=["operator"], route_class=DirectRoute)


@admin_router.get(
    "",
    response_model=Catalog,
    summary="The scope catalog",
    responses=error_responses(400, 401, 403, 429),
)
async def get_scope_catalog(actor: AdminActorDep, session: SessionDep) -> JSONResponse:
    """The scopes keys may carry (keyhouse's built-in account-API scopes first,
    marked `builtin`) and the attributes keys may be restricted on. Needs an
    admin token."""
    return JSONResponse(catalog_object(await ScopeService(session).get()))


@admin_router.put(
    "",
    response_model=Catalog,
    summary="Replace the scope catalog",
    responses=error_responses(400, 401, 403, 409, 413, 415, 429),
)
async def put_scope_catalog(
    body: PutCatalogRequest, actor: AdminActorDep, session: SessionDep
) -> JSONResponse:
    """Replaces the platform's scopes (`resource:action`, lowercase, no
    wildcard, not in keyhouse's own resources `keys`, `environments`,
    `events`, `account`) and attributes (camelCase names); `attributes` left
    out empties them. Answers the catalog as `GET /admin/scopes` does. A
    scope or attribute that a key that is not revoked still carries cannot be
    removed (409, naming the keys). Recorded as a `scopes.updated` event in
    the operator's log (`GET /admin/events`) when anything changed. Needs an
    admin token."""
    entries, _ = await ScopeService(session).replace(
        [Entry(s.name, s.description) for s in body.scopes],
        [Entry(a.name, a.description) for a in body.attributes],
        actor=actor,
    )
    return JSONResponse(catalog_object(entries))
