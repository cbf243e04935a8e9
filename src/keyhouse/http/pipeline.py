"""One request pipeline: each step of a request, implemented once.

    credential -> authenticate -> secret key? -> meter -> actor -> body/query -> endpoint

* credential: ``bearer_token``, from the request's one ``Authorization``
  header (``RequestMiddleware`` refuses a second one, for every route);
* authenticate: ``get_caller`` (an account's key, through
  ``keys.verify.Verifier``) or ``get_admin_actor`` (the operator's token);
  failed attempts are counted per address (``failed_authentication``);
* ``get_secret_caller``: the management API takes secret keys only;
* meter: ``get_metered_caller`` counts the call against the plan
  (``limits.service.meter``; 402/429, a refused call consumes nothing);
* actor: ``request_actor``, who the audit log says acted;
* body and query: ``read_body``/``read_query``, validated by the route's
  pydantic model, errors mapped to ``validation_error`` as FastAPI's are;
* the session: ``request_session``, one per request, committed once before
  the response is sent, then the key cache told what changed.

Most routes get these through FastAPI's dependency solver (the ``*Dep``
aliases below). The two hot routes, ``POST /verify`` and ``GET /keys``, are
``DirectRoute``s: their handler calls the same functions in the same order
itself, because the generic solver costs more than the verification
(cProfile of the ASGI app in-process: ~200 us of a 255 us ``POST /verify``
in ``solve_dependencies`` and its helpers), and ``RequestMiddleware``
calls that handler directly (``direct_routes``). Either way a route has
one handler, and a step has one implementation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from contextlib import AbstractAsyncContextManager
from typing import Annotated, Any, Literal, TypeVar

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.responses import Response
from starlette.routing import BaseRoute

from keyhouse import errors
from keyhouse.audit.service import Actor
from keyhouse.db.session import DbSession
from keyhouse.http.errors import validation_error
from keyhouse.http.query_names import query_names, refuse_unknown
from keyhouse.keys import changes
from keyhouse.keys.format import Kind
from keyhouse.keys.verify import Caller, Verifier, bearer_of
from keyhouse.limits.service import meter
from keyhouse.runtime import Runtime

__all__ = [
    "AdminActorDep",
    "CallerDep",
    "DirectRoute",
    "KeyActorDep",
    "MeteredCallerDep",
    "RuntimeDep",
    "SecretCallerDep",
    "SessionDep",
    "direct",
    "direct_routes",
    "get_admin_actor",
    "get_caller",
    "get_metered_caller",
    "get_runtime",
    "get_secret_caller",
    "read_body",
    "read_query",
    "request_session",
]

_READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A User-Agent is kept in the audit log up to this length.
_USER_AGENT_MAX = 512

Model = TypeVar("Model", bound=BaseModel)
Handler = Callable[[Request], Coroutine[Any, Any, Response]]
Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])


# -- the process's runtime and the request's session ----------------------------------


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def request_session(request: Request, runtime: Runtime) -> AbstractAsyncContextManager[DbSession]:
    """The request's one session: committed on leaving, then the cache told what changed
    (``keys.changes.session``). Leaving before the response is sent means a 2xx is on disk.
    """
    return changes.session(runtime, write=request.method not in _READ_METHODS)


async def get_session(request: Request, runtime: RuntimeDep) -> AsyncIterator[DbSession]:
    async with request_session(request, runtime) as session:
        yield session


# scope="function": the session commits after the endpoint returns and
# before the response is sent.
SessionDep = Annotated[DbSession, Depends(get_session, scope="function")]


# -- credential, authentication, actor ------------------------------------------------


def _header(request: Request, name: bytes) -> str | None:
    """The value of the request's header ``name`` (lowercase), the first if repeated.

    A scan of the ASGI header list: Starlette's ``request.headers.get`` builds
    a ``Headers`` mapping first, ~3 us of a ~50 us ``POST /verify`` (cProfile).
    """
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _client_host(request: Request) -> str | None:
    client = request.scope.get("client")
    return client[0] if client else None


def bearer_token(request: Request) -> str:
    """The token of ``Authorization: Bearer <token>``, or 401 missing_api_key.

    ``RequestMiddleware`` refused a request with two ``Authorization`` headers.
    """
    return bearer_of(_header(request, b"authorization"))


def request_actor(
    request: Request, type_: Literal["key", "admin"], actor_id: str | None = None
) -> Actor:
    user_agent = _header(request, b"user-agent")
    return Actor(
        type_,
        actor_id,
        _client_host(request),
        user_agent[:_USER_AGENT_MAX] if user_agent else None,
    )


def failed_authentication(
    request: Request, runtime: Runtime, exc: errors.Unauthorized
) -> errors.KeyhouseError:
    """The 401 for a credential that did not pass, or 429 for an address that keeps guessing."""
    address = _client_host(request) or "unknown"
    wait = runtime.failed_auth.record_failure(address)
    if wait is None:
        return exc
    return errors.RateLimited(
        "Too many failed authentications from this address.",
        fix=f"Check the key you send; retry after {wait} s (Retry-After).",
        headers={"Retry-After": str(wait)},
    )


async def get_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """Authenticate the request's key (any type); 401 when it does not pass."""
    token = bearer_token(request)
    try:
        caller = await Verifier(runtime).authenticate(token, actor=request_actor(request, "key"))
    except errors.Unauthorized as exc:
        raise failed_authentication(request, runtime, exc) from None
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


# -- body and query ---------------------------------------------------------------------


def _located(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    """pydantic's errors with ``where`` first in each ``loc``, as FastAPI reports them."""
    return [{**problem, "loc": (where, *problem["loc"])} for problem in exc.errors()]


async def read_body(request: Request, model: type[Model]) -> Model:
    """The JSON body as ``model``; 400 validation_error naming the first problem.

    Parsed and validated in one pass by pydantic-core (duplicate members: the
    last wins; nesting past its recursion limit is invalid JSON, not a crash).
    ``RequestMiddleware`` has already refused a body that is too large or not
    JSON.
    """
    body = await request.body()
    if not body:
        raise validation_error([{"type": "missing", "loc": ("body",)}])
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(_located(exc, "body")) from None


def read_query(request: Request, model: type[Model]) -> Model:
    """The query parameters as ``model`` (a repeated parameter: the last, as FastAPI)."""
    if not request.scope.get("query_string"):
        # No parameter: the model's defaults, valid by definition. Validating
        # an empty dict cost ~5 us of a ~170 us GET /keys (cProfile).
        return model.model_construct()
    try:
        return model.model_validate(dict(request.query_params))
    except ValidationError as exc:
        raise validation_error(_located(exc, "query")) from None


# -- routes that call the steps themselves ------------------------------------------------

_DIRECT = "__keyhouse_direct__"


def direct(handler: Handler) -> Callable[[Endpoint], Endpoint]:
    """Mark an endpoint as answered by ``handler`` (see ``DirectRoute``).

    ``handler`` resolves the endpoint's parameters by calling the pipeline's
    steps, in the order FastAPI would (dependencies, then query, then body),
    and calls the endpoint with them.
    """

    def mark(endpoint: Endpoint) -> Endpoint:
        setattr(endpoint, _DIRECT, handler)
        return endpoint

    return mark


def _known_query(handler: Handler, allowed: frozenset[str]) -> Handler:
    """``handler`` behind the query check every route has (``http/query_names.py``):
    what the app-wide dependency does for routes that FastAPI's solver serves."""

    async def handle(request: Request) -> Response:
        refuse_unknown(request.scope["query_string"], allowed)
        return await handler(request)

    return handle


class DirectRoute(APIRoute):
    """An APIRoute whose endpoint, if marked with ``@direct``, is answered by its handler.

    The endpoint's signature still makes the OpenAPI operation (body, query,
    security); only the resolution of its parameters differs from FastAPI's:
    explicit calls to the same functions instead of the generic solver.
    """

    @property
    def direct_handler(self) -> Handler | None:
        handler: Handler | None = getattr(self.endpoint, _DIRECT, None)
        if handler is None:
            return None
        # One wrapped handler per route: the router and the middleware call the same.
        checked: Handler | None = self.__dict__.get("_checked_direct_handler")
        if checked is None:
            checked = _known_query(handler, query_names(self))
            self.__dict__["_checked_direct_handler"] = checked
        return checked

    def get_route_handler(self) -> Handler:
        return self.direct_handler or super().get_route_handler()


def direct_routes(routes: Iterable[BaseRoute]) -> dict[tuple[str, str], Handler]:
    """``(method, path)`` -> handler of every direct route without path parameters.

    ``RequestMiddleware`` calls these handlers itself: Starlette's exception
    middleware, FastAPI's exit stacks and the router's match cost ~35% of a
    ``POST /verify`` (cProfile, in-process) and do nothing for these routes.
    The handler is the route's own, so the answer is the same whichever
    dispatches it.
    """
    table: dict[tuple[str, str], Handler] = {}
    pending = list(routes)
    while pending:
        route = pending.pop()
        included = getattr(route, "original_router", None)  # FastAPI's include_router
        if included is not None:
            pending.extend(included.routes)
        elif isinstance(route, DirectRoute) and route.direct_handler is not None:
            if route.param_convertors:
                continue
            for method in route.methods or ():
                table[(method, route.path)] = route.direct_handler
    return table
