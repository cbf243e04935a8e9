"""The gateway's ASGI application: authenticate, meter, pass on, stream back.

For every HTTP request, whatever its method, path and query:

1. the guards keyhouse's API has for headers (sizes, one ``Authorization``,
   ``RequestMiddleware``'s own check), and a path without dot segments (a
   ``/../`` would leave the upstream's path prefix);
2. ``get_forward_caller``: the pipeline's authenticator, with forward auth's
   credential (``Authorization: Bearer`` or ``KEYHOUSE_FORWARD_AUTH_HEADER``);
   any key type (a public key is what browser code holds). An admin or
   verify token is no account's key: 401, and the upstream never sees it;
3. ``metered_call``: the pipeline's meter (402, 429 with ``Retry-After``);
4. the request, with its body streamed, to the upstream (httpx); the
   upstream's status, headers and body streamed back.

Refusals are keyhouse's envelope, and the upstream is not called. What a
call costs (README, "No proxy"): a call the upstream answered counts, whatever
its status, for the upstream did the work and an upstream's 5xx is often its
answer to the request (and the rate limit is what protects it when it is
overloaded); a call the gateway answers itself (400, 502 ``provider_error``,
503) consumes nothing, quota or rate token (``metered_call`` gives back every
error raised past the meter, ``_gateway_answer``): the upstream answered
nothing.

Memory per request is bounded by the chunks in flight: uvicorn stops reading
a request body the application has not taken (its flow control), httpx sends
each chunk as it comes, and each response chunk is written before the next
is read.
"""

from __future__ import annotations

import logging
import os
import re
import time
import traceback
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import quote, unquote_to_bytes

import anyio
import httpx
import structlog
from starlette.requests import Request
from starlette.routing import Router
from starlette.types import Message, Receive, Scope, Send

from keyhouse import errors
from keyhouse.config import Settings, load_settings
from keyhouse.gateway.headers import request_headers, response_headers
from keyhouse.gateway.upstream import Upstream, check_provider, provider_error
from keyhouse.http.errors import RETRY_AFTER_SECONDS, database_unavailable, error_response
from keyhouse.http.identity import identity_headers
from keyhouse.http.middleware import RequestMiddleware
from keyhouse.http.pipeline import get_forward_caller, metered_call
from keyhouse.ids import new_ulid
from keyhouse.keys.format import KeyFormat
from keyhouse.keys.verify import Caller
from keyhouse.logs import configure_logging, get_logger
from keyhouse.runtime import Runtime

__all__ = [
    "PROVIDER_ENV",
    "UPSTREAM_ENV",
    "Gateway",
    "create_gateway_app",
    "gateway_app_from_env",
]

# How `keyhouse gateway --workers N` tells its workers (and how a container may
# tell the command) where the upstream is and what it is called.
UPSTREAM_ENV = "KEYHOUSE_GATEWAY_UPSTREAM"
PROVIDER_ENV = "KEYHOUSE_GATEWAY_PROVIDER"

# A pooled connection to the upstream is dropped after this long idle. Below
# the keep-alive timeouts of common servers (gunicorn 2 s, uvicorn and Node 5 s):
# a connection reused just as the upstream closes it fails the request that
# took it (a 502 reset for the client).
_KEEPALIVE_EXPIRY_SECONDS = 1.5

log = get_logger("keyhouse.gateway")
access_log = get_logger("keyhouse.access")


class ClientDisconnected(Exception):
    """The client went away while its request body was being passed on."""


# How often a path is percent-decoded when looking for dot segments: a server
# behind a server may decode once more than the one in front (%252e -> %2e -> .);
# a path still changing after this many rounds is refused, not passed on.
_MAX_DECODINGS = 4
# What some server on the way reads as a segment's end: '/', its encoding %2F
# (nginx as the upstream decodes it, then resolves the dots: reproduced, r14),
# and '\\' with its encoding %5C (Windows servers, Tomcat's ALLOW_BACKSLASH).
_SEPARATORS = re.compile(rb"[/\\]")
_DOT_SEGMENTS = frozenset({b".", b".."})


def _has_dot_segment(raw_path: bytes) -> bool:
    """Whether some decoding of ``raw_path`` holds a ``.`` or ``..`` segment.

    Decoded up to ``_MAX_DECODINGS`` times, split after each round, so
    ``%2F`` and ``%5C`` are separators and ``%2e``, ``%252e`` are dots. A
    segment's path parameters (``..;x``) are cut off first: Tomcat and Spring
    remove them, then resolve the ``..`` that is left.
    """
    current = raw_path
    for _ in range(_MAX_DECODINGS):
        for segment in _SEPARATORS.split(current):
            if segment.split(b";", 1)[0] in _DOT_SEGMENTS:
                return True
        decoded = unquote_to_bytes(current)
        if decoded == current:
            return False
        current = decoded
    return True


def _bad_path(raw_path: bytes) -> errors.BadRequest | None:
    """400 for a path that is not ``/...`` or holds a dot segment (``.``, ``..``, also
    percent-encoded, once or more, or between encoded slashes or backslashes,
    ``_has_dot_segment``): the upstream would resolve it past the gateway's path
    prefix. Clients remove dot segments before sending (RFC 3986 section 5.2.4)."""
    if not raw_path.startswith(b"/"):
        return errors.BadRequest(
            "The request target is not a path.", fix="Send a path that starts with '/'."
        )
    if _has_dot_segment(raw_path):
        return errors.BadRequest(
            "The path holds a '.' or '..' segment (perhaps percent-encoded, or between "
            "encoded slashes or backslashes).",
            fix="Send the path with its dot segments resolved (as browsers and HTTP "
            "clients do), also those between encoded slashes (%2F, %5C) or backslashes.",
        )
    return None


def _has_body(scope: Scope) -> bool:
    """Whether the request frames a body (RFC 9112 section 6.3): a Content-Length
    other than 0, or a Transfer-Encoding."""
    for name, value in scope["headers"]:
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            return True
    return False


async def _request_body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body, chunk by chunk, as the server hands it over."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk: bytes = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return


class Gateway:
    """The ASGI application (``http`` and ``lifespan``; a WebSocket is refused).

    ``running()`` is its lifespan: the process's ``Runtime`` (``Runtime.serving``,
    as ``keyhouse serve``) and one httpx client with its pool of upstream
    connections.
    """

    def __init__(self, settings: Settings, upstream: Upstream, provider: str) -> None:
        self.settings = settings
        self.upstream = upstream
        self.provider = provider
        self.runtime: Runtime | None = None
        self.client: httpx.AsyncClient | None = None
        # keyhouse API's header guards and its path masking for the access
        # log: one implementation (the middleware's), not a copy.
        self._guards = RequestMiddleware(
            self,
            max_body=settings.max_body_bytes,
            key_format=KeyFormat(settings.key_prefix_secret, settings.key_prefix_public),
        )
        self._access_log = access_log.bind()
        self._router = Router(lifespan=self._lifespan)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Gateway]:
        settings = self.settings
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(
                connect=settings.gateway_connect_timeout_seconds,
                read=settings.gateway_read_timeout_seconds,
                write=settings.gateway_read_timeout_seconds,
                pool=settings.gateway_connect_timeout_seconds,
            ),
            limits=httpx.Limits(
                max_connections=settings.gateway_max_connections,
                max_keepalive_connections=settings.gateway_max_connections,
                keepalive_expiry=_KEEPALIVE_EXPIRY_SECONDS,
            ),
            # Nothing from the environment (HTTP_PROXY, .netrc credentials),
            # no redirects followed (the client gets the upstream's 3xx), and
            # no cookie kept: one client serves every caller, and a cookie
            # one caller's answer set must never go with another's request.
            trust_env=False,
            follow_redirects=False,
            cookies=httpx.Cookies(_refusing_jar()),
        )
        async with Runtime.serving(settings) as runtime, client:
            self.runtime, self.client = runtime, client
            log.info("gateway", upstream=str(self.upstream), provider=self.provider)
            try:
                yield self
            finally:
                self.runtime = self.client = None

    @asynccontextmanager
    async def _lifespan(self, _app: object) -> AsyncIterator[None]:
        async with self.running():
            yield

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._router.lifespan(scope, receive, send)
        else:  # websocket: not passed on (Upgrade is hop-by-hop)
            await receive()
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        ulid, _ = new_ulid()
        tracking_id = f"req_{ulid}"
        state = scope.setdefault("state", {})
        state["tracking_id"] = tracking_id
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = list(message.get("headers", ()))
                present = {name for name, _ in headers}
                ours = [(b"x-tracking-id", tracking_id.encode("ascii"))]
                for name, value in state.get("ratelimit_headers", {}).items():
                    ours.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                # Added, never replacing the upstream's own.
                headers += [(name, value) for name, value in ours if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        async def reject(exc: errors.KeyhouseError) -> None:
            response = error_response(tracking_id, exc)
            # keyhouse's own answer: as its API's (RequestMiddleware) are sent.
            response.headers["Cache-Control"] = "no-store"
            response.headers["X-Content-Type-Options"] = "nosniff"
            await response(scope, receive, send_wrapper)

        tokens = structlog.contextvars.bind_contextvars(tracking_id=tracking_id)
        try:
            raw_path: bytes = scope.get("raw_path") or quote(scope["path"]).encode("ascii")
            guard = self._guards._check_headers(scope) or _bad_path(raw_path)
            if guard is not None:
                await reject(guard)
                return
            try:
                response = await self._open(scope, receive, raw_path)
            except errors.KeyhouseError as exc:
                await reject(exc)
                return
            try:
                await self._relay(response, receive, send_wrapper)
            finally:
                await response.aclose()
        except ClientDisconnected:
            status = 499  # nginx's word for it: the client closed the request
        except Exception as exc:
            stack = traceback.format_list(traceback.extract_tb(exc.__traceback__))
            log.error("unhandled_exception", error_type=type(exc).__name__, stack="".join(stack))
            if not response_started:
                await reject(errors.KeyhouseError())
        finally:
            self._access_log.info(
                "request",
                method=scope["method"],
                path=self._guards._safe_path(scope["path"]),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.reset_contextvars(**tokens)

    async def _open(self, scope: Scope, receive: Receive, raw_path: bytes) -> httpx.Response:
        """Authenticate and meter the call, then send it upstream: the upstream's answer,
        its body not read yet. Raises the ``KeyhouseError`` to answer with instead."""
        runtime, client = self.runtime, self.client
        if runtime is None or client is None:
            raise errors.ServiceUnavailable(
                "The gateway is starting or stopping.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            )
        request = Request(scope, receive)
        try:
            caller = await get_forward_caller(request, runtime)
            async with metered_call(request, caller, runtime, gives_back=_gateway_answer):
                return await self._send(client, scope, receive, raw_path, caller)
        except errors.KeyhouseError:
            raise
        except Exception as exc:
            # Only the steps before the upstream reach here (_send turns every
            # failure of httpx into a KeyhouseError): the database's.
            if not database_unavailable(exc) or isinstance(exc, ClientDisconnected):
                raise
            log.warning("database_unavailable", error_type=type(exc).__name__)
            raise errors.ServiceUnavailable(
                "The database is not reachable right now.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None

    async def _send(
        self,
        client: httpx.AsyncClient,
        scope: Scope,
        receive: Receive,
        raw_path: bytes,
        caller: Caller,
    ) -> httpx.Response:
        client_address = scope.get("client")
        headers = request_headers(
            scope["headers"],
            identity_headers(caller),
            credential_header=self.settings.forward_auth_header,
            client=client_address[0] if client_address else None,
            scheme=scope.get("scheme", "http"),
        )
        request = httpx.Request(
            scope["method"],
            self.upstream.target(raw_path, scope.get("query_string", b"")),
            headers=headers,
            content=_request_body(receive) if _has_body(scope) else None,
        )
        try:
            return await client.send(request, stream=True)
        except httpx.PoolTimeout:
            raise errors.ServiceUnavailable(
                f"All of the gateway's {self.settings.gateway_max_connections} connections "
                f"to {self.provider} are busy.",
                fix="Retry after the number of seconds in the Retry-After header.",
                headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
            ) from None
        except httpx.LocalProtocolError:
            # httpx would not send it as HTTP/1.1 (h11 refused a header or the body's framing).
            raise errors.BadRequest(
                "The request cannot be passed on as HTTP/1.1.",
                fix="Check the request's headers and its body's length.",
            ) from None
        except httpx.TransportError as exc:
            raise provider_error(
                exc,
                self.provider,
                self.settings.gateway_connect_timeout_seconds,
                self.settings.gateway_read_timeout_seconds,
            ) from None

    async def _relay(self, response: httpx.Response, receive: Receive, send: Send) -> None:
        """The upstream's answer to the client, chunk by chunk (its bytes as they came:
        a compressed body stays compressed). Stops when the client goes away.

        A failure of the upstream after its status line was sent cannot be a
        502 any more: the answer is left incomplete (uvicorn closes the
        connection), so the client sees a cut answer, never a short one
        that looks whole.
        """
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw),
            }
        )
        complete = False
        async with anyio.create_task_group() as group:

            async def watch_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                group.cancel_scope.cancel()

            group.start_soon(watch_disconnect)
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                complete = True
            except httpx.TransportError as exc:
                cut = provider_error(
                    exc,
                    self.provider,
                    self.settings.gateway_connect_timeout_seconds,
                    self.settings.gateway_read_timeout_seconds,
                )
                log.warning(
                    "upstream_failed_mid_answer",
                    provider=self.provider,
                    provider_code=cut.provider_code,
                    status=response.status_code,
                )
            group.cancel_scope.cancel()
        if complete:
            await send({"type": "http.response.body", "body": b"", "more_body": False})


def _gateway_answer(exc: Exception) -> bool:
    """``metered_call``'s ``gives_back`` for the gateway: any error raised past the meter.

    ``_send`` returns the upstream's answer and raises for anything else: a
    400 h11 would not send (reviewer r14: ``Content-Length: 5 `` with a
    trailing space was counted), a 502, a 503, the client gone. None of these
    is the API's answer, so none consumes quota or a rate token.
    """
    return True


def _refusing_jar() -> CookieJar:
    """A cookie jar no cookie gets into (no domain is allowed to set one)."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


def create_gateway_app(settings: Settings, upstream: str | Upstream, provider: str) -> Gateway:
    """The gateway for ``settings`` (keyhouse's database, limits and gateway settings),
    passing requests to ``upstream`` (``http(s)://host[:port][/prefix]``) and naming it
    ``provider`` in 502 answers. Raises ValueError (one line) for a bad URL or name."""
    configure_logging(settings.log_level)
    # httpx logs every request's URL at INFO, query string included: a
    # client's query is its own (keyhouse logs paths only, masked).
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    parsed = upstream if isinstance(upstream, Upstream) else Upstream.parse(upstream)
    return Gateway(settings, parsed, check_provider(provider))


def gateway_app_from_env() -> Any:
    """Factory for ``keyhouse gateway --workers N``: settings, upstream and provider
    from the environment (``KEYHOUSE_GATEWAY_UPSTREAM``, ``KEYHOUSE_GATEWAY_PROVIDER``)."""
    return create_gateway_app(load_settings(), os.environ[UPSTREAM_ENV], os.environ[PROVIDER_ENV])
