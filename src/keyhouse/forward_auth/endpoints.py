"""``/forward-auth``: a proxy asks, before each request it holds, whether the client's key passes.

The route answers every method (proxies ask with the original request's
method: Envoy does; nginx's ``auth_request`` and Traefik ask with GET), and
``HEAD`` as ``GET`` (``RequestMiddleware``). Only ``GET`` is in the OpenAPI
document: one operation, one operation id.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhouse.forward_auth import service
from keyhouse.forward_auth.schemas import FORWARD_TOKEN_HEADER, ForwardAuthResponse
from keyhouse.http.pipeline import (
    DirectRoute,
    RuntimeDep,
    direct,
    get_forward_caller,
    get_runtime,
    metered_call,
)
from keyhouse.keys.verify import Caller
from keyhouse.openapi import error_responses
from keyhouse.responses import JSONResponse
from keyhouse.runtime import Runtime

__all__ = ["PATH", "ForwardAuthAnswers", "router"]

PATH = "/forward-auth"
# Every method a proxy may ask with, but GET (the documented route) and HEAD (answered as GET).
_OTHER_METHODS = ["POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_PROXY_CREDENTIAL_HEADER = FORWARD_TOKEN_HEADER.lower().encode("ascii")

router = APIRouter(tags=["forward auth"], route_class=DirectRoute)


async def get_forward_auth_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """The proxy's token first (``service.check_forward_token``), then the client's key."""
    tokens = [
        v.decode("latin-1") for k, v in request.scope["headers"] if k == _PROXY_CREDENTIAL_HEADER
    ]
    service.check_forward_token(runtime, tokens)
    return await get_forward_caller(request, runtime)


async def _metered_forward_caller(
    request: Request,
    caller: Annotated[Caller, Depends(get_forward_auth_caller)],
    runtime: RuntimeDep,
) -> AsyncIterator[Caller]:
    async with metered_call(request, caller, runtime):
        yield caller


async def _forward_auth(request: Request) -> Response:
    """``forward_auth``'s parameters, from the pipeline's steps (see ``DirectRoute``)."""
    runtime: Runtime = await get_runtime(request)
    caller = await get_forward_auth_caller(request, runtime)
    async with metered_call(request, caller, runtime) as metered:
        return await forward_auth(metered)


@router.get(
    PATH,
    response_model=ForwardAuthResponse,
    summary="Forward auth: may this request pass?",
    responses=error_responses(400, 401, 402, 403, 429),
)
@direct(_forward_auth)
async def forward_auth(
    caller: Annotated[Caller, Depends(_metered_forward_caller, scope="function")],
) -> JSONResponse:
    """For proxies (nginx `auth_request`, Traefik `ForwardAuth`, Envoy `ext_authz`):
    authenticates the client's key and counts the call against its account's
    plan, as an account-API call. Any method is answered alike (proxies ask
    with the original request's); the original request's path and query are
    not read. Proxies send no body (nginx: `proxy_pass_request_body off`;
    Traefik and Envoy send none by default); a body sent anyway is subject
    to keyhouse's usual checks (JSON only, else 415; at most
    `KEYHOUSE_MAX_BODY_BYTES`, else 413).

    The proxy sends its own token, a verify token (`KEYHOUSE_VERIFY_TOKENS`)
    or an admin token, in `X-Keyhouse-Forward-Token`; without it (401
    `forward_token_required`) or with a wrong one (401 `invalid_forward_token`)
    the key is not looked at. The client's key comes in `Authorization:
    Bearer <key>` (or raw in the header `KEYHOUSE_FORWARD_AUTH_HEADER` names,
    e.g. `X-Api-Key`); secret and public keys both pass.

    200: the identity as headers for the upstream, `X-Keyhouse-Account-Id`,
    `X-Keyhouse-Key-Id`, `X-Keyhouse-Key-Type` and `X-Keyhouse-Environment-Id`
    (a scoped key only), the same in the body, and `RateLimit-*` when the plan
    has a rate. Otherwise the true status (401, 402 `usage_limit_exceeded`, 429
    with `Retry-After`, 503) with the envelope. Every answer carries
    `X-Keyhouse-Status` (its status), and an error its envelope as compact JSON
    in `X-Keyhouse-Error`: nginx's `auth_request` passes on 401 and 403 only
    and drops the body, and its error page rebuilds the answer from these.
    """
    body, headers = service.identity(caller)
    return JSONResponse(body, headers=headers)


@router.api_route(PATH, methods=_OTHER_METHODS, include_in_schema=False)
@direct(_forward_auth)
async def forward_auth_any_method(
    caller: Annotated[Caller, Depends(_metered_forward_caller, scope="function")],
) -> JSONResponse:
    """``forward_auth`` for the proxies that ask with the original request's method."""
    return await forward_auth(caller)


def _under_path(path: str) -> bool:
    """``/forward-auth`` or any path under it: a proxy pointed at ``/forward-auth/``
    (a trailing slash) learns its 404 from ``X-Keyhouse-Status`` too."""
    return path == PATH or path.startswith(PATH + "/")


class ForwardAuthAnswers:
    """Adds ``service.answer_headers`` to every answer of ``/forward-auth``, whoever made it.

    Pure ASGI, outside ``RequestMiddleware``: the guards every route shares
    (two ``Authorization`` headers, a header too long) answer there, before
    any route, and nginx must learn their status too (a client's bad request
    would otherwise reach it as a 500 it cannot tell from keyhouse being
    down). So do the paths under it (``/forward-auth/``: 404). Every other
    path passes through untouched. An error's body is
    held until it is complete (a few hundred bytes) to copy it into a header.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _under_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def send_wrapper(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if start is None or message["type"] != "http.response.body":
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            headers = [
                (name, value)
                for name, value in start.get("headers", ())
                if name not in (b"x-keyhouse-status", b"x-keyhouse-error")
            ]
            body = b"".join(chunks)
            headers += service.answer_headers(start["status"], body)
            await send({**start, "headers": headers})
            start = None
            await send({**message, "body": body})

        await self.app(scope, receive, send_wrapper)
