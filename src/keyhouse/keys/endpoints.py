"""``/keys``: the seed's ``GET /keys`` and the lifecycle around it; ``POST /verify``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import ValidationError
from starlette.responses import Response

from keyhouse.audit.service import Actor
from keyhouse.http.pipeline import (
    AdminActorDep,
    AdminIdempotency,
    DirectRoute,
    KeyActorDep,
    KeyIdempotency,
    MeteredCallerDep,
    RuntimeDep,
    SecretCallerDep,
    SessionDep,
    VerifyActorDep,
    check_scope,
    direct,
    get_caller,
    get_runtime,
    get_secret_caller,
    get_verify_actor,
    mark_used,
    metered_call,
    read_body,
    read_query,
    request_actor,
    request_session,
    require_scope,
)
from keyhouse.keys.presenter import issued_key_object, key_object
from keyhouse.keys.schemas import (
    ApiKey,
    CreateKeyRequest,
    ImportKeyRequest,
    ListKeysQuery,
    ListKeysResponse,
    RollKeyRequest,
    UpdateKeyRequest,
    VerifyRequest,
    VerifyResponse,
)
from keyhouse.keys.service import KeyService
from keyhouse.keys.verify import NO_REQUIREMENTS, Caller, Requirements, verify_key
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse

__all__ = ["admin_router", "router", "verify_router"]

router = APIRouter(prefix="/keys", tags=["keys"], route_class=DirectRoute)
# The built-in scope each route needs (restrictions.BUILTIN_SCOPES); first in a
# route's dependencies: a refused call is neither metered nor stored as an answer.
KEYS_READ = require_scope("keys:read")
KEYS_WRITE = require_scope("keys:write")
admin_router = APIRouter(prefix="/admin", tags=["operator"], route_class=DirectRoute)
# POST /verify: the hot path of the operator's platform, a router of its own
# (no /keys prefix, its own OpenAPI tag).
verify_router = APIRouter(tags=["verify"], route_class=DirectRoute)


async def _list_keys(request: Request) -> Response:
    """``list_keys``' parameters, from the pipeline's steps."""
    runtime = await get_runtime(request)
    caller = await get_secret_caller(request, await get_caller(request, runtime))
    check_scope(caller, "keys:read")  # KEYS_READ, which the solver would run
    mark_used(runtime, caller)
    async with metered_call(request, caller, runtime) as caller:
        query = read_query(request, ListKeysQuery)
        async with request_session(request, runtime) as session:
            return await list_keys(caller, session, runtime, query)


# The way out is never locked: revoking a key, and rolling it without grace
# (the old key stops at once), are how an account answers a leak, so they
# are never refused for its quota or rate (an account over its plan could
# otherwise not stop a leaked key until the month ends) and are not metered.


async def _unmetered_actor(request: Request, caller: SecretCallerDep) -> Actor:
    return request_actor(request, "key", caller.key_id)


async def _rolls_without_grace(request: Request) -> bool:
    body = await request.body()  # kept by the request: the endpoint reads it again
    if not body:
        return False  # the default grace
    try:
        return RollKeyRequest.model_validate_json(body).expiresInSeconds == 0
    except ValidationError:
        return False  # metered, then refused with 400 by the body's validation


async def get_rolling_caller(
    request: Request, caller: SecretCallerDep, runtime: RuntimeDep
) -> AsyncIterator[Caller]:
    """A roll with grace is metered like any call; one without grace is not."""
    if await _rolls_without_grace(request):
        yield caller
        return
    async with metered_call(request, caller, runtime):
        yield caller


RollingCallerDep = Annotated[Caller, Depends(get_rolling_caller, scope="function")]


async def _rolling_actor(request: Request, caller: RollingCallerDep) -> Actor:
    return request_actor(request, "key", caller.key_id)


@router.get(
    "",
    response_model=ListKeysResponse,
    summary="List all API keys for the authenticated user's account",
    dependencies=[KEYS_READ],
    responses=error_responses(400, 401, 402, 403, 429),
)
@direct(_list_keys)
async def list_keys(
    caller: MeteredCallerDep,
    session: SessionDep,
    runtime: RuntimeDep,
    query: Annotated[ListKeysQuery, Query()],
) -> JSONResponse:
    """Lists all API keys for the authenticated account, newest first.

    An environment-scoped key sees only the keys of its environment. Each key
    carries its full key string (`key`) unless the operator set
    `KEYHOUSE_LIST_REVEALS_KEYS=false`, in which case secret keys are masked.
    Needs the scope `keys:read`.
    """
    objects = await KeyService(session, runtime).list_objects(
        caller.account_id,
        scope_environment_id=caller.environment_id,
        environment_id=query.environmentId,
        key_type=query.keyType,
        revoked=query.revoked,
        viewer=caller,
    )
    return JSONResponse({"keys": objects})


@router.post(
    "",
    response_model=ApiKey,
    status_code=201,
    summary="Create an API key",
    dependencies=[KEYS_WRITE, KeyIdempotency],
    responses=error_responses(400, 401, 402, 403, 429, 404, 409, 413, 415),
)
async def create_key(
    body: CreateKeyRequest,
    caller: MeteredCallerDep,
    actor: KeyActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Creates a key and returns it with its full `key` string.

    An environment-scoped caller creates keys in its own environment only.
    `name` is stored normalized (Unicode NFC, trimmed); `expiresAt` is a JSON
    string with a time zone (a number is refused), in the future.
    `scopes` and `restrictions` limit what the key may do and where; a key
    with scopes or restrictions creates only keys within its own (403
    `scope_escalation`), and gives them its own when they are left out.
    Needs the scope `keys:write`.
    """
    service = KeyService(session, runtime)
    issued = await service.create(
        caller.account_id,
        name=body.name,
        key_type=body.keyType,
        environment_id=body.environmentId,
        expires_at=body.expiresAt,
        scopes=body.scopes,
        restrictions=None if body.restrictions is None else body.restrictions.to_data(),
        caller=caller,
        actor=actor,
    )
    return JSONResponse(issued_key_object(runtime, issued.row), status_code=201)


@router.get(
    "/{key_id}",
    response_model=ApiKey,
    summary="Retrieve an API key",
    dependencies=[KEYS_READ],
    responses=error_responses(400, 401, 402, 403, 429, 404),
)
async def get_key(
    key_id: str, caller: MeteredCallerDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """One key of the account. A key of another account (or, for an
    environment-scoped caller, of another environment) is `404 not_found`.
    Needs the scope `keys:read`."""
    service = KeyService(session, runtime)
    row = await service.get(caller.account_id, key_id, scope_environment_id=caller.environment_id)
    return JSONResponse(key_object(runtime, row, viewer=caller))


@router.post(
    "/{key_id}/revoke",
    response_model=ApiKey,
    summary="Revoke an API key",
    dependencies=[KEYS_WRITE, KeyIdempotency],
    # 429: an address that keeps failing to authenticate, never the account's rate.
    responses=error_responses(400, 401, 403, 429, 404, 409),
)
async def revoke_key(
    key_id: str,
    caller: SecretCallerDep,
    actor: Annotated[Actor, Depends(_unmetered_actor)],
    session: SessionDep,
    runtime: RuntimeDep,
    force: Annotated[
        bool, Query(description="Revoke even the account's last active account-wide secret key.")
    ] = False,
) -> JSONResponse:
    """Revokes the key at once. Revoking a revoked key succeeds and changes nothing.
    Never refused for the account's quota or rate, and not counted.

    Revoking the account's last active account-wide secret key is refused
    with `409 last_secret_key` unless `force=true`. Needs the scope `keys:write`.
    """
    service = KeyService(session, runtime)
    row = await service.revoke(
        caller.account_id,
        key_id,
        scope_environment_id=caller.environment_id,
        force=force,
        actor=actor,
    )
    return JSONResponse(key_object(runtime, row, viewer=caller))


@router.patch(
    "/{key_id}",
    response_model=ApiKey,
    summary="Update an API key",
    dependencies=[KEYS_WRITE],
    responses=error_responses(400, 401, 402, 403, 429, 404, 413, 415),
)
async def rename_key(
    key_id: str,
    body: UpdateKeyRequest,
    caller: MeteredCallerDep,
    actor: KeyActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Renames the key and/or replaces its `scopes` and `restrictions`: the
    members sent change (at least one); any other member (`revoked`, `key`,
    `keyType`, ...) is refused with 400. `scopes: null` makes the key
    unrestricted; `restrictions: null` (or `{}`) removes its restrictions.
    Narrowing needs the scope `keys:write`; widening (a scope or an address
    the key did not have, or removing them) needs an unrestricted
    account-wide secret key (403 `scope_escalation` otherwise). Recorded as
    `key.updated` with `before` and `after`; every worker applies the change
    within a second."""
    service = KeyService(session, runtime)
    row = await service.update(
        caller.account_id,
        key_id,
        **body.changes(),
        scope_environment_id=caller.environment_id,
        caller=caller,
        actor=actor,
    )
    return JSONResponse(key_object(runtime, row, viewer=caller))


@router.post(
    "/{key_id}/roll",
    response_model=ApiKey,
    status_code=201,
    summary="Roll an API key",
    dependencies=[KEYS_WRITE, KeyIdempotency],
    responses=error_responses(400, 401, 402, 403, 429, 404, 409, 413, 415),
)
async def roll_key(
    key_id: str,
    caller: RollingCallerDep,
    actor: Annotated[Actor, Depends(_rolling_actor)],
    session: SessionDep,
    runtime: RuntimeDep,
    body: RollKeyRequest | None = None,
) -> JSONResponse:
    """Creates a new key with the same name, type, environment and `expiresAt`,
    and returns it (full `key`). The old key keeps working for
    `expiresInSeconds` (a JSON integer, default 86400, 0 to 604800): its
    `expiresAt` becomes the earlier of its own and now + grace, so a roll never
    extends a key's life. A revoked or expired key cannot be rolled (409), nor
    can a key that was rolled already (409 `conflict`; its `fix` names the key
    that replaced it: roll that one). A roll without grace
    (`expiresInSeconds: 0`) is never refused for the account's quota or rate,
    and not counted. The new key has the old one's `scopes` and
    `restrictions`; a key with scopes or restrictions rolls only keys within
    its own (403 `scope_escalation`). Needs the scope `keys:write`."""
    grace = (body or RollKeyRequest()).expiresInSeconds
    service = KeyService(session, runtime)
    issued = await service.roll(
        caller.account_id,
        key_id,
        grace_seconds=grace,
        scope_environment_id=caller.environment_id,
        caller=caller,
        actor=actor,
    )
    return JSONResponse(issued_key_object(runtime, issued.row), status_code=201)


@admin_router.post(
    "/accounts/{account_id}/keys/import",
    response_model=ApiKey,
    status_code=201,
    summary="Import an existing key",
    dependencies=[AdminIdempotency],
    responses=error_responses(400, 401, 402, 403, 404, 409, 413, 415, 429),
)
async def import_key(
    account_id: str,
    body: ImportKeyRequest,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Stores a key issued by another system (hashed and encrypted, like
    keyhouse's own), so operators can migrate without re-issuing keys.
    Imported keys authenticate like native ones. A key that starts with one of
    keyhouse's prefixes must be imported as that prefix's type (400 otherwise).
    `scopes` and `restrictions` as for `POST /keys`. Needs an admin token."""
    issued = await KeyService(session, runtime).import_key(
        account_id,
        body.key,
        name=body.name,
        key_type=body.keyType,
        environment_id=body.environmentId,
        scopes=body.scopes,
        restrictions=None if body.restrictions is None else body.restrictions.to_data(),
        actor=actor,
    )
    return JSONResponse(issued_key_object(runtime, issued.row), status_code=201)


async def _verify(request: Request) -> Response:
    """``verify_endpoint``'s parameters, from the pipeline's steps."""
    runtime = await get_runtime(request)
    actor = await get_verify_actor(request, runtime)
    body = await read_body(request, VerifyRequest)
    return await verify_endpoint(body, actor, runtime)


@verify_router.post(
    "/verify",
    response_model=VerifyResponse,
    summary="Verify a key",
    operation_id="verifyKey",
    responses=error_responses(400, 401, 403, 413, 415, 429),
)
@direct(_verify)
async def verify_endpoint(
    body: VerifyRequest, actor: VerifyActorDep, runtime: RuntimeDep
) -> JSONResponse:
    """Answers whether a key your user sent may pass, and whose it is. Always
    200 for a well-formed request: the verdict is in `valid` and `code`. A
    valid verification counts as a use of the key (`lastUsedAt`) and against
    the account's plan: over its monthly requests the code is
    `usage_exceeded`, over the key's rate limit `rate_limited` (a refused
    verification is not counted). Needs an admin token or a verify token
    (`KEYHOUSE_VERIFY_TOKENS`: this route only).

    A key with scopes or restrictions is held to them, with what the request
    gives: `scopes` it needs, the user's `ip` and `origin`, and `attributes`.
    Refused, the code says which (`insufficient_scope`, `ip_not_allowed`,
    `origin_not_allowed`, `attribute_not_allowed`, or `secret_key_in_browser`
    for a secret key given with an `origin`, of an account that refuses secret
    keys from browsers) and `reason` what failed; such a refusal is not
    counted. A key with an IP allowlist or allowed origins, verified without
    `ip` or `origin`, is refused (fail closed)."""
    asked = NO_REQUIREMENTS
    if body.scopes is not None or body.ip is not None or body.origin is not None or body.attributes:
        asked = Requirements(body.scopes or (), body.ip, body.origin, body.attributes or {})
    return JSONResponse(await verify_key(runtime, body.key, actor, asked))
