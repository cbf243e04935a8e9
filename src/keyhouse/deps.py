"""FastAPI dependencies: the runtime, one session per request, the caller.

Every dependency is ``async def``: FastAPI runs a plain ``def`` dependency in
the thread pool, which a profile of POST /verify showed as 30% of the event
loop's time (bench, issue 4).

The session commits once, after the endpoint returns and *before* the
response is sent (``scope="function"``), so a 2xx means the write is on disk.
Authentication runs before the request's session touches the database
(see ``keys/verify.py``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated, Literal

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from keyhouse import errors
from keyhouse.audit.service import Actor
from keyhouse.keys.format import Kind
from keyhouse.keys.service import invalidate_after_commit
from keyhouse.keys.verify import Caller, Verifier, bearer_of
from keyhouse.limits.service import meter
from keyhouse.runtime import Runtime

__all__ = [
    "AdminActorDep",
    "CallerDep",
    "KeyActorDep",
    "MeteredCallerDep",
    "RuntimeDep",
    "SecretCallerDep",
    "SessionDep",
]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.session(write=request.method not in _READ_METHODS) as session:
        yield session
    invalidate_after_commit(session, runtime)


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``, or 401 missing_api_key."""
    return bearer_of(request.headers.get("authorization"))


def request_actor(
    request: Request, type_: Literal["key", "admin"], actor_id: str | None = None
) -> Actor:
    ip = request.client.host if request.client else None
    user_agent = request.headers.get("user-agent")
    return Actor(type_, actor_id, ip, user_agent[:512] if user_agent else None)


async def get_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """Authenticate the request's key (any type); 401 when it does not pass."""
    token = bearer_token(request)
    try:
        caller = await Verifier(runtime).authenticate(token, actor=request_actor(request, "key"))
    except errors.Unauthorized as exc:
        raise failed_authentication(request, runtime, exc) from None
    request.state.caller = caller
    return caller


def failed_authentication(
    request: Request, runtime: Runtime, exc: errors.Unauthorized
) -> errors.KeyhouseError:
    """The 401 for a key that did not pass, or 429 for an address that keeps guessing."""
    address = request.client.host if request.client else "unknown"
    wait = runtime.failed_auth.record_failure(address)
    if wait is None:
        return exc
    return errors.RateLimited(
        "Too many failed authentications from this address.",
        fix=f"Check the key you send; retry after {wait} s (Retry-After).",
        headers={"Retry-After": str(wait)},
    )


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_secret_caller(caller: CallerDep) -> Caller:
    """Management endpoints: authenticated first, then a secret key is required."""
    if not caller.is_secret:
        raise errors.Forbidden(
            "A public key cannot call the management API.",
            fix="Use a secret key of the account (sk_...).",
        )
    return caller


SecretCallerDep = Annotated[Caller, Depends(get_secret_caller)]


async def get_metered_caller(
    request: Request, caller: SecretCallerDep, runtime: RuntimeDep
) -> Caller:
    """Count the call against the account's plan: 429 rate_limited, 402 usage_limit_exceeded.

    A refused call consumes nothing. The RateLimit-* headers go on the response.
    """
    metered = await meter(runtime, caller)
    if metered.headers:
        request.scope.setdefault("state", {})["ratelimit_headers"] = metered.headers
    if metered.refusal is not None:
        raise metered.refusal
    return caller


MeteredCallerDep = Annotated[Caller, Depends(get_metered_caller)]


async def get_key_actor(request: Request, caller: MeteredCallerDep) -> Actor:
    return request_actor(request, "key", caller.key_id)


KeyActorDep = Annotated[Actor, Depends(get_key_actor)]


async def get_admin_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """The operator API: an admin token, never an account's key."""
    token = bearer_token(request)
    if runtime.admin_tokens.matches(token):
        return request_actor(request, "admin")
    if runtime.key_format.parse(token).kind is Kind.NATIVE:
        raise errors.Forbidden(
            "An account's API key cannot call the operator API.",
            fix="Use an admin token (keyhouse admin-token prints it).",
        )
    raise failed_authentication(
        request,
        runtime,
        errors.InvalidApiKey(
            "The admin token is not valid.",
            fix="Send 'Authorization: Bearer <admin token>'; keyhouse admin-token prints it.",
        ),
    )


AdminActorDep = Annotated[Actor, Depends(get_admin_actor)]
