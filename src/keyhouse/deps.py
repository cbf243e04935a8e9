"""FastAPI dependencies: the runtime, one session per request, the caller.

The session commits once, after the endpoint returns and *before* the
response is sent (``scope="function"``), so a 2xx means the write is on disk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from keyhouse import errors
from keyhouse.keys.service import Caller, KeyService
from keyhouse.runtime import Runtime

__all__ = ["CallerDep", "RuntimeDep", "SecretCallerDep", "SessionDep"]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# RFC 9110 allows any whitespace run after the scheme; one space is what clients send.
_MAX_AUTHORIZATION_LENGTH = 1024


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[AsyncSession]:
    async with runtime.db.session(write=request.method not in _READ_METHODS) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``, or 401 missing_api_key."""
    header = request.headers.get("authorization")
    if header is None:
        raise errors.MissingApiKey()
    if len(header) > _MAX_AUTHORIZATION_LENGTH:
        raise errors.InvalidApiKey()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.MissingApiKey(
            "The Authorization header does not use the Bearer scheme.",
            fix="Send the header 'Authorization: Bearer <key>'.",
        )
    return token


async def get_caller(request: Request, session: SessionDep, runtime: RuntimeDep) -> Caller:
    """Authenticate the request's key (any type); 401 when it does not pass."""
    caller = await KeyService(session, runtime).authenticate(bearer_token(request))
    request.state.caller = caller
    return caller


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
