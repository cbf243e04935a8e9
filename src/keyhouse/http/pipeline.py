"""One request pipeline: each step of a request, implemented once.

    credential -> authenticate -> secret key? -> meter -> actor -> body/query -> endpoint

* credential: ``bearer_token``, from the request's one ``Authorization``
  header (``RequestMiddleware`` refuses a second one, for every route);
  ``forward_credential`` for a request a proxy hands on (forward auth, the
  gateway): the same, or the header ``KEYHOUSE_FORWARD_AUTH_HEADER`` names;
* authenticate: ``get_caller``/``get_forward_caller`` (an account's key,
  through ``authenticate_token`` and ``keys.verify.Verifier``),
  ``get_admin_actor`` (the operator's token) or
  ``get_verify_actor`` (``POST /verify``: an admin or a verify-only token);
  a verify-only token anywhere else in keyhouse's API is 403
  (``verify_only``), and sent as a client's key through a proxy 401; failed
  attempts are counted per address (``failed_authentication``);
* ``get_secret_caller``: the management API takes secret keys only, and
  applies the key's restrictions that concern keyhouse's own API
  (``check_restrictions``: the account's browser guard, the key's IP
  allowlist);
* scope: ``require_scope("keys:read")`` as a route dependency (``check_scope``
  in a direct route): a restricted key needs the route's built-in scope;
* meter: ``metered_call`` (``get_metered_caller`` as a dependency) counts
  the call against the plan (``limits.service.meter``; 402/429; a refused
  call, or one answered with a 5xx, consumes nothing);
* actor: ``request_actor``, who the audit log says acted;
* body and query: ``read_body``/``read_query``, validated by the route's
  pydantic model, errors mapped to ``validation_error`` as FastAPI's are;
* the session: ``request_session``, one per request, committed once before
  the response is sent, then the key cache told what changed;
* idempotency (writes): ``get_key_idempotency``/``get_admin_idempotency``
  claim the request's ``Idempotency-Key`` in that session, or answer with
  the stored answer; ``DirectRoute`` stores the route's answer in the same
  session before it commits (``idempotency/service.py``).

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
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NoReturn, TypeVar

from fastapi import Depends, Header, Request
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import BaseRoute

from keyhouse import errors
from keyhouse.audit.service import Actor
from keyhouse.db.engine import CONFIRM_COMMIT
from keyhouse.db.session import DbSession
from keyhouse.http.errors import validation_error
from keyhouse.http.query_names import query_names, refuse_unknown
from keyhouse.idempotency import schemas as idempotency
from keyhouse.idempotency.service import IdempotencyService, fingerprint, parse_key
from keyhouse.keys import changes
from keyhouse.keys.format import Kind
from keyhouse.keys.restrictions import BUILTIN_SCOPES, grants, ip_allowed, origin_allowed
from keyhouse.keys.verify import MAX_AUTHORIZATION_LENGTH, Caller, Verifier, bearer_of
from keyhouse.limits.service import meter, unmeter
from keyhouse.runtime import Runtime

__all__ = [
    "AdminActorDep",
    "AdminIdempotency",
    "CallerDep",
    "DirectRoute",
    "KeyActorDep",
    "KeyIdempotency",
    "MeteredCallerDep",
    "RuntimeDep",
    "SecretCallerDep",
    "SessionDep",
    "VerifyActorDep",
    "authenticate_token",
    "bearer_token",
    "check_restrictions",
    "check_scope",
    "direct",
    "direct_routes",
    "forward_credential",
    "get_admin_actor",
    "get_admin_idempotency",
    "get_caller",
    "get_forward_caller",
    "get_key_idempotency",
    "get_metered_caller",
    "get_runtime",
    "get_secret_caller",
    "get_verify_actor",
    "mark_used",
    "may_verify",
    "metered_call",
    "read_body",
    "read_query",
    "request_session",
    "require_scope",
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

    A write's COMMIT that fails is checked before it is believed (``CONFIRM_COMMIT``):
    a commit whose answer was lost is still a 2xx, not a 503.
    """
    if request.method in _READ_METHODS:
        return changes.session(runtime, write=False)
    return _write_session(runtime)


@asynccontextmanager
async def _write_session(runtime: Runtime) -> AsyncIterator[DbSession]:
    async with changes.session(runtime, write=True) as session:
        session.info[CONFIRM_COMMIT] = True
        yield session


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


def forward_credential(request: Request, runtime: Runtime) -> str:
    """The key of a request a proxy hands on (forward auth, the gateway).

    ``Authorization: Bearer <key>``, or the raw key in the header that
    ``KEYHOUSE_FORWARD_AUTH_HEADER`` names (``X-Api-Key``, say) when that is
    set: APIs that take their key that way keep their clients unchanged.
    Both sent, or that header sent twice: 400 ``validation_error`` (which of
    two credentials counts is a guess keyhouse does not make, as with two
    ``Authorization`` headers). Neither: 401 ``missing_api_key``.
    """
    name: str | None = runtime.settings.forward_auth_header
    if name is not None:
        wanted = name.lower().encode("latin-1")
        headers: list[tuple[bytes, bytes]] = request.scope["headers"]
        values = [v.decode("latin-1") for k, v in headers if k == wanted]
        if len(values) > 1:
            raise errors.BadRequest(
                f"The request has more than one {name} header.", fix=f"Send one {name} header."
            )
        if values:
            if _header(request, b"authorization") is not None:
                raise errors.BadRequest(
                    f"The request has both the Authorization and the {name} header.",
                    fix=f"Send the key in one of them: the raw key in {name}, or "
                    "'Authorization: Bearer <key>'.",
                )
            token = values[0].strip()
            if not token:
                raise errors.MissingApiKey(
                    f"The {name} header is empty.", fix=f"Send the key in the header {name}."
                )
            if len(token) > MAX_AUTHORIZATION_LENGTH:
                raise errors.InvalidApiKey()
            return token
    return bearer_token(request)


async def get_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """Authenticate the request's key (any type); 401 when it does not pass."""
    return await authenticate_token(request, runtime, bearer_token(request))


async def get_forward_caller(request: Request, runtime: RuntimeDep) -> Caller:
    """Authenticate the key of a request a proxy hands on (``forward_credential``), any type.

    A verify token there is a key that does not pass (401, a failed guess),
    never the 403 ``verify_only``: the caller is a client from outside, and a
    403 would tell it that the string it holds is the proxy's token (r14).
    """
    token = forward_credential(request, runtime)
    caller = await authenticate_token(request, runtime, token, name_verify_tokens=False)
    check_forwarded_restrictions(request, caller)
    mark_used(runtime, caller)
    return caller


async def authenticate_token(
    request: Request, runtime: Runtime, token: str, *, name_verify_tokens: bool = True
) -> Caller:
    """The caller ``token`` stands for; 401 when it does not pass, counted against the
    client's address (429 when it keeps guessing); 403 for a verify-only token when
    ``name_verify_tokens`` (keyhouse's own API, whose callers are the operator's
    services), else 401 as for any other string."""
    try:
        caller = await Verifier(runtime).authenticate(token, actor=request_actor(request, "key"))
    except errors.Unauthorized as exc:
        # Looked at only once the key failed: nothing on the hot path.
        if name_verify_tokens and _is_verify_token(runtime, token):
            raise verify_only() from None
        raise failed_authentication(request, runtime, exc) from None
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


async def get_secret_caller(request: Request, caller: CallerDep) -> Caller:
    """Management endpoints: authenticated first, then a secret key is required, used
    as its restrictions allow (``check_restrictions``)."""
    if not caller.is_secret:
        raise errors.Forbidden(
            "A public key cannot call the management API.",
            fix="Use a secret key of the account (sk_...).",
        )
    check_restrictions(request, caller)
    return caller


SecretCallerDep = Annotated[Caller, Depends(get_secret_caller)]


# -- restrictions and scopes (issue 15) -------------------------------------------------
#
# Checked after authentication and before metering: a refused call consumes
# nothing, as every other refusal. An unrestricted key of an account without
# the browser guard costs two attribute reads here and one in check_scope.

_ORIGIN = b"origin"
_SEC_FETCH_SITE = b"sec-fetch-site"


def _from_browser(request: Request) -> bool:
    """Whether a browser sent the request: it has an ``Origin`` header (browsers send one
    on every cross-origin request and on same-origin writes), or ``Sec-Fetch-Site:
    cross-site`` (Fetch Metadata, https://www.w3.org/TR/fetch-metadata/)."""
    headers: list[tuple[bytes, bytes]] = request.scope["headers"]
    for key, value in headers:
        if key == _ORIGIN:
            return True
        if key == _SEC_FETCH_SITE and value.strip().lower() == b"cross-site":
            return True
    return False


def check_restrictions(request: Request, caller: Caller) -> None:
    """The account API: 403 ``secret_key_in_browser`` for a secret key sent by a browser
    when its account refuses that (``refuseSecretKeysFromBrowsers``); 403
    ``ip_not_allowed`` when the key has an IP allowlist and the client's address
    is not in it.

    The client's address is the connection's, which uvicorn rewrites from
    ``X-Forwarded-For`` only for a connection from ``KEYHOUSE_TRUSTED_PROXIES``
    (``serving.proxy_options``): a client cannot name its own address. An
    address that is not one (what a trusted proxy forwarded) fails closed.
    A key's origins and attributes are the platform's (``POST /verify``), not
    keyhouse's API's.
    """
    if caller.refuse_browsers and caller.is_secret and _from_browser(request):
        raise errors.SecretKeyInBrowser()
    restrictions = caller.restrictions
    if restrictions is not None and not ip_allowed(restrictions, _client_host(request)):
        raise errors.IpNotAllowed()


def check_forwarded_restrictions(request: Request, caller: Caller) -> None:
    """Forward auth and the gateway: ``check_restrictions``, and a key's ``allowedOrigins``
    against the request's ``Origin``, for there the request is the client's own (a
    browser's, for a public key), not a platform's call about it. A key with
    allowedOrigins and a request without ``Origin`` is refused (fail closed, as
    ``POST /verify`` without ``origin``). Scopes and attributes are the platform's
    vocabulary, which a proxy does not know: ``POST /verify`` checks them."""
    check_restrictions(request, caller)
    restrictions = caller.restrictions
    if (
        restrictions is not None
        and restrictions.allowed_origins is not None
        and not origin_allowed(restrictions, _header(request, _ORIGIN))
    ):
        raise errors.OriginNotAllowed()


def check_scope(caller: Caller, scope: str) -> None:
    """403 ``insufficient_scope`` when the key's scopes (None: unrestricted) lack ``scope``."""
    if caller.scopes is not None and not grants(caller.scopes, scope):
        raise errors.InsufficientScope(scope)


def mark_used(runtime: Runtime, caller: Caller) -> None:
    """The key's use passed authentication, its restrictions and its scope: record it
    for ``lastUsedAt``. Only here (and in ``POST /verify`` once its checks pass), so a
    use refused after authentication (``ip_not_allowed``, ``insufficient_scope``,
    ``secret_key_in_browser``, a public key on a management route) leaves
    ``lastUsedAt`` as it was (review r15). The plan's limits come after: a 402/429
    is still a use of the key, as it always was."""
    Verifier(runtime).mark_used(caller.key_id)


def require_scope(scope: str) -> Any:
    """A route dependency: the calling key needs the built-in ``scope`` (``keys:read``,
    ...). In a route's ``dependencies=[...]`` first, so it runs before metering and
    the idempotency step: a refused call is neither counted nor stored."""
    if scope not in BUILTIN_SCOPES:
        raise ValueError(f"{scope!r} is not one of keyhouse's built-in scopes")

    async def scoped(caller: SecretCallerDep, runtime: RuntimeDep) -> None:
        check_scope(caller, scope)
        mark_used(runtime, caller)

    scoped.__name__ = scoped.__qualname__ = f"require_scope[{scope}]"
    return Depends(scoped)


def _server_error(exc: Exception) -> bool:
    """Whether ``exc`` is answered with a 5xx (``http/errors.py``, or the middleware's 500/503)."""
    if isinstance(exc, errors.KeyhouseError | StarletteHTTPException):
        return exc.status_code >= 500
    return not isinstance(exc, RequestValidationError)


@asynccontextmanager
async def metered_call(
    request: Request,
    caller: Caller,
    runtime: Runtime,
    *,
    gives_back: Callable[[Exception], bool] = _server_error,
) -> AsyncIterator[Caller]:
    """Count the call against the account's plan: 429 rate_limited, 402 usage_limit_exceeded.

    A refused call consumes nothing, and neither does a call whose answer is
    a 5xx: what it took (quota, token) is given back when the error leaves
    this block (the session's commit is inside it). ``gives_back`` says which
    errors those are; the gateway gives back every one, for past the meter
    only its upstream's answer is returned, and whatever is raised is the
    gateway's own answer (a 400 for a request h11 will not send, a 502, ...).
    The RateLimit-* headers go on the response.
    """
    metered = await meter(runtime, caller)
    if metered.headers:
        request.scope.setdefault("state", {})["ratelimit_headers"] = metered.headers
    if metered.refusal is not None:
        raise metered.refusal
    try:
        yield caller
    except Exception as exc:
        if gives_back(exc):
            await unmeter(runtime, metered)
        raise


async def get_metered_caller(
    request: Request, caller: SecretCallerDep, runtime: RuntimeDep
) -> AsyncIterator[Caller]:
    """``metered_call`` as a dependency: its exit runs after the endpoint and the session."""
    async with metered_call(request, caller, runtime):
        yield caller


# scope="function": entered before SessionDep, so it sees the session's
# commit fail, and it gives back before the response is sent.
MeteredCallerDep = Annotated[Caller, Depends(get_metered_caller, scope="function")]


async def get_key_actor(request: Request, caller: MeteredCallerDep) -> Actor:
    return request_actor(request, "key", caller.key_id)


KeyActorDep = Annotated[Actor, Depends(get_key_actor)]


def _is_verify_token(runtime: Runtime, token: str) -> bool:
    return runtime.verify_tokens is not None and runtime.verify_tokens.matches(token)


def may_verify(runtime: Runtime, token: str) -> bool:
    """Whether ``token`` may verify keys: an admin or a verify-only token (constant-time
    comparisons, ``admin_tokens.py``). ``POST /verify`` and forward auth."""
    return runtime.admin_tokens.matches(token) or _is_verify_token(runtime, token)


def verify_only() -> errors.Forbidden:
    """The 403 for a verify-only token (``KEYHOUSE_VERIFY_TOKENS``) anywhere but ``/verify``."""
    return errors.Forbidden(
        "A verify token can only call POST /verify.",
        fix="Use an admin token for the operator API, or an account's secret key for "
        "the account API.",
    )


async def get_admin_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """The operator API: an admin token, never an account's key or a verify token."""
    token = bearer_token(request)
    if runtime.admin_tokens.matches(token):
        return request_actor(request, "admin")
    if _is_verify_token(runtime, token):
        raise verify_only()
    _refuse_operator_token(request, runtime, token)


def _refuse_operator_token(request: Request, runtime: Runtime, token: str) -> NoReturn:
    """403 for an account's key, else 401 (counted as a failed authentication)."""
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


async def get_verify_actor(request: Request, runtime: RuntimeDep) -> Actor:
    """``POST /verify``: an admin token or a verify-only token.

    The actor's address and user agent go into a ``key.expired`` event the
    verification may record; the event's actor is the key itself.
    """
    token = bearer_token(request)
    if may_verify(runtime, token):
        return request_actor(request, "admin")
    _refuse_operator_token(request, runtime, token)


VerifyActorDep = Annotated[Actor, Depends(get_verify_actor)]


# -- idempotency of writes ----------------------------------------------------------------

_IDEMPOTENCY_HEADER = idempotency.HEADER.lower().encode("ascii")
# scope["state"]: the claim the route's answer is stored under.
_CLAIM = "idempotency_claim"

IdempotencyKeyHeader = Annotated[
    str | None, Header(alias=idempotency.HEADER, description=idempotency.HEADER_DESCRIPTION)
]


class _Replay(Exception):
    """Raised by the idempotency step to send a stored answer instead of running the route.

    Caught by the route's handler (``DirectRoute``), inside the session: the
    request's transaction then ends as a read.
    """

    def __init__(self, response: Response) -> None:
        self.response = response


@dataclass(frozen=True, slots=True)
class _Claim:
    service: IdempotencyService
    scope: str
    key: str


async def _claim_idempotency_key(
    request: Request, runtime: Runtime, session: DbSession, scope: str
) -> None:
    values = [v.decode("latin-1") for k, v in request.scope["headers"] if k == _IDEMPOTENCY_HEADER]
    key = parse_key(values)
    if key is None:
        return
    service = IdempotencyService(session, runtime)
    print_ = fingerprint(
        request.method, request.scope["path"], request.scope["query_string"], await request.body()
    )
    stored = await service.begin(scope, key, print_)
    if stored is not None:
        raise _Replay(
            Response(
                stored.body,
                status_code=stored.status_code,
                media_type="application/json",
                headers={idempotency.REPLAYED_HEADER: "true"},
            )
        )
    request.scope["state"][_CLAIM] = _Claim(service, scope, key)


async def get_key_idempotency(
    request: Request,
    caller: SecretCallerDep,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> None:
    """A write of the account API: its ``Idempotency-Key`` is the calling key's.

    Takes the caller unmetered: a route's ``dependencies`` run before its
    parameters, so metering here would meter revoke and roll without grace,
    which are never refused for quota or rate (README, "Limits"). A replay is
    answered here, before the route's metering: it is not counted.
    """
    await _claim_idempotency_key(request, runtime, session, f"key:{caller.key_id}")


async def get_admin_idempotency(
    request: Request,
    actor: AdminActorDep,
    session: SessionDep,
    runtime: RuntimeDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> None:
    """A write of the operator API: its ``Idempotency-Key`` is the operator's."""
    await _claim_idempotency_key(request, runtime, session, "admin")


# For a write route's ``dependencies=[...]``: after authentication and metering.
KeyIdempotency = Depends(get_key_idempotency)
AdminIdempotency = Depends(get_admin_idempotency)
_IDEMPOTENCY_STEPS = (get_key_idempotency, get_admin_idempotency)


def _idempotent(handler: Handler) -> Handler:
    """``handler``, answering a replay, and storing its answer under the request's claim.

    The route handler runs inside the request's session (FastAPI closes the
    function-scoped dependencies, so commits, after it returns): the answer
    is stored in the write's own transaction.
    """

    async def handle(request: Request) -> Response:
        try:
            response = await handler(request)
        except _Replay as replay:
            return replay.response
        claim: _Claim | None = request.scope["state"].pop(_CLAIM, None)
        if claim is not None:
            body = bytes(response.body)
            await claim.service.finish(claim.scope, claim.key, response.status_code, body)
        return response

    return handle


def _needs(dependant: Dependant, steps: tuple[Callable[..., Any], ...]) -> bool:
    pending = list(dependant.dependencies)
    while pending:
        dependency = pending.pop()
        if dependency.call in steps:
            return True
        pending.extend(dependency.dependencies)
    return False


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
    """keyhouse's route: a ``@direct`` endpoint is answered by its handler, and a route
    with an idempotency step has its answers stored (``_idempotent``).

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
        direct_handler = self.direct_handler
        if direct_handler is not None:
            if _needs(self.dependant, _IDEMPOTENCY_STEPS):
                # Its session ends inside the handler: no answer could be stored in it.
                raise TypeError(f"{self.path}: a direct route cannot be idempotent")
            return direct_handler
        handler = super().get_route_handler()
        return _idempotent(handler) if _needs(self.dependant, _IDEMPOTENCY_STEPS) else handler


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
