"""The operator API for accounts (``/admin/accounts``) and ``GET /account``."""

from __future__ import annotations

from fastapi import APIRouter

from keyhouse.accounts.schemas import (
    Account,
    AccountWithUsage,
    CreateAccountRequest,
    CreateAccountResponse,
    ListAccountsResponse,
    UpdateAccountRequest,
)
from keyhouse.accounts.service import AccountService
from keyhouse.http.pipeline import (
    AdminActorDep,
    AdminIdempotency,
    DirectRoute,
    RuntimeDep,
    SecretCallerDep,
    SessionDep,
    require_scope,
)
from keyhouse.keys.presenter import issued_key_object
from keyhouse.limits.service import usage_object
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse
from keyhouse.timeutil import utcnow

__all__ = ["account_router", "admin_router"]

admin_router = APIRouter(prefix="/admin/accounts", tags=["operator"], route_class=DirectRoute)
account_router = APIRouter(prefix="/account", tags=["account"])


@admin_router.post(
    "",
    response_model=CreateAccountResponse,
    status_code=201,
    summary="Create an account",
    dependencies=[AdminIdempotency],
    responses=error_responses(400, 401, 403, 409, 413, 415, 429),
)
async def create_account(
    body: CreateAccountRequest, actor: AdminActorDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """Creates an account and its first account-wide secret key, returned in
    full. Limits left out take the operator's defaults. Needs an admin token."""
    new = await AccountService(session, runtime).create(body.name, limits=body.limits, actor=actor)
    key = issued_key_object(runtime, new.key.row)
    return JSONResponse(
        {"account": Account.from_row(new.account).to_json(), "key": key}, status_code=201
    )


@admin_router.get(
    "",
    response_model=ListAccountsResponse,
    summary="List accounts",
    responses=error_responses(400, 401, 403, 429),
)
async def list_accounts(
    actor: AdminActorDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """All accounts, newest first. Needs an admin token."""
    rows = await AccountService(session, runtime).list_accounts()
    return JSONResponse({"accounts": [Account.from_row(r).to_json() for r in rows]})


@admin_router.get(
    "/{account_id}",
    response_model=Account,
    summary="Retrieve an account",
    responses=error_responses(400, 401, 403, 404, 429),
)
async def get_account(
    account_id: str, actor: AdminActorDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """One account. Needs an admin token."""
    row = await AccountService(session, runtime).get(account_id)
    return JSONResponse(Account.from_row(row).to_json())


@admin_router.patch(
    "/{account_id}",
    response_model=Account,
    summary="Update an account",
    responses=error_responses(400, 401, 403, 404, 413, 415, 429),
)
async def update_account(
    account_id: str,
    body: UpdateAccountRequest,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Renames the account, changes its limits and/or its browser guard
    (`refuseSecretKeysFromBrowsers`): only the members sent change; a limit
    set to null is unlimited. Every worker applies a change of limits or of
    the guard within a second. Needs an admin token."""
    row = await AccountService(session, runtime).update(
        account_id,
        name=body.name,
        limits=body.limits,
        refuse_secret_keys_from_browsers=body.refuseSecretKeysFromBrowsers,
        actor=actor,
    )
    return JSONResponse(Account.from_row(row).to_json())


@account_router.get(
    "",
    response_model=AccountWithUsage,
    summary="The caller's account",
    operation_id="getCurrentAccount",
    dependencies=[require_scope("account:read")],
    responses=error_responses(400, 401, 403, 429),
)
async def my_account(
    caller: SecretCallerDep, session: SessionDep, runtime: RuntimeDep
) -> JSONResponse:
    """The account of the calling key: its plan limits and this period's
    usage, with the time it resets. This call is not counted and answers
    even when the account is over its quota, so it can see why. Needs the
    scope `account:read`."""
    row = await AccountService(session, runtime).get(caller.account_id)
    body = Account.from_row(row).to_json()
    used, period = await runtime.limiter.used(caller.account_id, utcnow())
    # The plan's limit is in the account's own `limits` member.
    body["usage"] = usage_object(used, period, period_start=True)
    return JSONResponse(body)
