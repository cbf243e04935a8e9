"""The operator's key API: any account's keys, with an admin token.

What a platform's own backend calls to manage its customers' keys: the same
``KeyService`` calls as the account API (``keys/endpoints.py``), with the
account named in the path (or none: a key id is unique) and the operator as
the audit log's actor. Not metered: the operator's calls are not the
account's usage.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from keyhouse.accounts.service import AccountService
from keyhouse.http.pipeline import (
    AdminActorDep,
    AdminIdempotency,
    DirectRoute,
    RuntimeDep,
    SessionDep,
)
from keyhouse.keys.presenter import issued_key_object, key_object
from keyhouse.keys.schemas import (
    ApiKey,
    CreateKeyRequest,
    ListKeysQuery,
    ListKeysResponse,
    RollKeyRequest,
    UpdateKeyRequest,
)
from keyhouse.keys.service import KeyService
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse

__all__ = ["router"]

router = APIRouter(prefix="/admin", tags=["operator"], route_class=DirectRoute)


@router.get(
    "/accounts/{account_id}/keys",
    response_model=ListKeysResponse,
    summary="List an account's keys",
    responses=error_responses(400, 401, 403, 404, 429),
)
async def admin_list_keys(
    account_id: str,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    query: Annotated[ListKeysQuery, Query()],
) -> JSONResponse:
    """The account's keys, newest first, with the filters of `GET /keys`
    (every environment's). An unknown account is `404 not_found`. Needs an
    admin token."""
    await AccountService(session, runtime).get(account_id)
    objects = await KeyService(session, runtime).list_objects(
        account_id,
        environment_id=query.environmentId,
        key_type=query.keyType,
        revoked=query.revoked,
        viewer=None,  # the operator: as KEYHOUSE_LIST_REVEALS_KEYS says
    )
    return JSONResponse({"keys": objects})


@router.post(
    "/accounts/{account_id}/keys",
    response_model=ApiKey,
    status_code=201,
    summary="Create a key for an account",
    dependencies=[AdminIdempotency],
    responses=error_responses(400, 401, 402, 403, 404, 409, 413, 415, 429),
)
async def admin_create_key(
    account_id: str,
    body: CreateKeyRequest,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Creates a key in the account (in any of its environments) and returns
    it with its full `key` string, as `POST /keys` does; the account's
    `maxKeys` holds (`402 key_limit_reached`). An unknown account or
    environment is `404 not_found`. `scopes` and `restrictions` as for
    `POST /keys` (the operator is not limited by them). Needs an admin token."""
    issued = await KeyService(session, runtime).create(
        account_id,
        name=body.name,
        key_type=body.keyType,
        environment_id=body.environmentId,
        expires_at=body.expiresAt,
        scopes=body.scopes,
        restrictions=None if body.restrictions is None else body.restrictions.to_data(),
        actor=actor,
    )
    return JSONResponse(issued_key_object(runtime, issued.row), status_code=201)


@router.get(
    "/keys/{key_id}",
    response_model=ApiKey,
    summary="Retrieve any key",
    responses=error_responses(400, 401, 403, 404, 429),
)
async def admin_get_key(
    key_id: str, actor: AdminActorDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """One key of any account, by id (`accountId` says whose). Needs an admin token."""
    row = await KeyService(session, runtime).get(None, key_id)
    return JSONResponse(key_object(runtime, row, viewer=None))


@router.patch(
    "/keys/{key_id}",
    response_model=ApiKey,
    summary="Update any key",
    responses=error_responses(400, 401, 403, 404, 413, 415, 429),
)
async def admin_rename_key(
    key_id: str,
    body: UpdateKeyRequest,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Renames the key and/or replaces its `scopes` and `restrictions`, as
    `PATCH /keys/{key_id}` does; the operator may widen them too. Needs an
    admin token."""
    row = await KeyService(session, runtime).update(None, key_id, **body.changes(), actor=actor)
    return JSONResponse(key_object(runtime, row, viewer=None))


@router.post(
    "/keys/{key_id}/revoke",
    response_model=ApiKey,
    summary="Revoke any key",
    dependencies=[AdminIdempotency],
    responses=error_responses(400, 401, 403, 404, 409, 429),
)
async def admin_revoke_key(
    key_id: str,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    force: Annotated[
        bool, Query(description="Revoke even the account's last active account-wide secret key.")
    ] = False,
) -> JSONResponse:
    """Revokes the key at once, as `POST /keys/{key_id}/revoke` does
    (idempotent; the account's last active account-wide secret key needs
    `force=true`, else `409 last_secret_key`). Needs an admin token."""
    row = await KeyService(session, runtime).revoke(None, key_id, force=force, actor=actor)
    return JSONResponse(key_object(runtime, row, viewer=None))


@router.post(
    "/keys/{key_id}/roll",
    response_model=ApiKey,
    status_code=201,
    summary="Roll any key",
    dependencies=[AdminIdempotency],
    responses=error_responses(400, 401, 402, 403, 404, 409, 413, 415, 429),
)
async def admin_roll_key(
    key_id: str,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    body: RollKeyRequest | None = None,
) -> JSONResponse:
    """Replaces the key with a new one (same name, type, environment and
    `expiresAt`), returned with its full `key`, as `POST /keys/{key_id}/roll`
    does; the old key works for `expiresInSeconds` (default 86400, 0 to
    604800). Needs an admin token."""
    grace = (body or RollKeyRequest()).expiresInSeconds
    issued = await KeyService(session, runtime).roll(None, key_id, grace_seconds=grace, actor=actor)
    return JSONResponse(issued_key_object(runtime, issued.row), status_code=201)
