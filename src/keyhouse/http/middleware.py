"""What every request passes through before its route: ``RequestMiddleware``.

Tracking id, access log, the guards every route shares (header sizes, one
``Authorization`` header, no key in the query string, body size and JSON
media type) and the last-resort 500/503. Pure ASGI (no
``BaseHTTPMiddleware``) so it adds nothing per request beyond what it does.
It sits outside FastAPI's exception handling, so it also catches what
escapes it and answers 500 ``internal_error`` with no internals, instead of
Starlette's plain-text page.

A request that passes the guards goes to its route: for the routes in
``direct`` (``http/pipeline.py``'s ``direct_routes``: the hot ones), the
middleware calls the route's own handler itself, skipping the framework's
routing; every other request goes through FastAPI. Either way, one handler
per route, and errors rendered by ``http/errors.py``.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping

import structlog
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keyhouse import errors
from keyhouse.http.errors import RETRY_AFTER_SECONDS, database_unavailable, error_response
from keyhouse.http.query import holds_key
from keyhouse.ids import ID_RE, new_ulid
from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH, KeyFormat, Kind
from keyhouse.logs import get_logger

__all__ = ["MAX_HEADERS_TOTAL", "MAX_HEADER_LINE", "RequestMiddleware"]

log = get_logger("keyhouse")
access_log = get_logger("keyhouse.access")

_BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Header limits, checked before anything reads a header. uvicorn with httptools
# sets none of its own (an 8 MiB header line reaches the app), so these are
# the limits clients meet, answered with the envelope. A line is name + value.
MAX_HEADER_LINE = 8 * 1024
MAX_HEADERS_TOTAL = 32 * 1024
# The key check (http/query.py) unwraps a query up to MAX_ROUNDS times: a
# crafted 60 KB query cost ~94 ms of CPU in it (measured, timeit). keyhouse's
# query parameters are ids, names, numbers and flags: 2 KiB is plenty, and
# bounds the check to a few milliseconds at worst.
MAX_QUERY_BYTES = 2048
# Fields that are not lists (RFC 9110 section 5.3: such a field must not be
# sent twice). Which of two credentials, media types or lengths counts is a
# guess that proxies and frameworks make differently (the first, the last,
# both joined by a comma), and a guess an attacker can steer (a garbage
# token first, a stolen one second): keyhouse refuses to make it, the same
# way on every route.
SINGLE_HEADERS = frozenset({b"authorization", b"content-type", b"content-length"})


class RequestMiddleware:
    """Tracking id, access log, request guards and the last-resort 500."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body: int,
        key_format: KeyFormat,
        direct: Mapping[tuple[str, str], Callable[[Request], Awaitable[Response]]] = {},
    ) -> None:
        self.app = app
        self.max_body = max_body
        self.key_format = key_format
        self.direct = dict(direct)
        prefixes = "|".join(map(re.escape, key_format.prefixes.values()))
        self._key_prefix = re.compile(prefixes)
        # A bound logger made once (create_app configured logging first): the
        # module's lazy proxy builds one on every call.
        self._access_log = access_log.bind()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        ulid, _ = new_ulid()
        tracking_id = f"req_{ulid}"
        scope.setdefault("state", {})["tracking_id"] = tracking_id
        started = time.perf_counter()
        status = 500
        response_started = False
        method = scope["method"]
        head = method == "HEAD"
        if head:
            # HEAD is GET without the body (RFC 9110 section 9.3.2): the same
            # route, steps and headers (Content-Length too), metered as GET
            # is, for it costs the same and tells the same (a key's validity
            # and its account's state; a free HEAD would be an unmetered,
            # unlimited credential probe). Load balancers probe with it. A
            # copy of the scope: the server reads its own to drop the body.
            scope = {**scope, "method": "GET"}

        async def send_wrapper(message: Message) -> None:
            nonlocal status, response_started
            if head and message["type"] == "http.response.body":
                message = {**message, "body": b""}
            elif message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                # Responses may hold keys: no cache anywhere keeps them.
                ours = [
                    (b"x-tracking-id", tracking_id.encode("ascii")),
                    (b"x-content-type-options", b"nosniff"),
                    (b"cache-control", b"no-store"),
                ]
                for name, value in scope["state"].get("ratelimit_headers", {}).items():
                    ours.append((name.lower().encode("latin-1"), value.encode("latin-1")))
                # Ours replace any the app set, as MutableHeaders' item
                # assignment would, in one pass instead of one scan a header
                # (send_wrapper: 0.25 s -> 0.14 s in cProfile of 20,000 /verify).
                names = {name for name, _ in ours}
                message["headers"] = [
                    (name, value)
                    for name, value in message.get("headers", ())
                    if name.lower() not in names
                ] + ours
            await send(message)

        async def reject(exc: errors.KeyhouseError) -> None:
            await error_response(tracking_id, exc)(scope, receive, send_wrapper)

        # bind/reset rather than the bound_contextvars() context manager: the
        # same, without a generator per request.
        tokens = structlog.contextvars.bind_contextvars(tracking_id=tracking_id)
        try:
            guard = self._check_headers(scope) or self._check_query(scope)
            if guard is not None:
                await reject(guard)
                return
            replay, guard, body = await self._read_body(scope, receive)
            if guard is not None:
                await reject(guard)
                return
            handler = self.direct.get((scope["method"], scope["path"]))
            if handler is None:
                await self.app(scope, replay, send_wrapper)
                return
            try:
                request = Request(scope, replay, send_wrapper)
                # The body read above, as Starlette's Request caches it: its
                # stream() machinery costs ~4 us a request (cProfile).
                request._body = body
                response = await handler(request)
            except errors.KeyhouseError as exc:
                response = error_response(tracking_id, exc)
            await response(scope, replay, send_wrapper)
        except Exception as exc:
            if database_unavailable(exc):
                # An outage, not a bug: 503 with Retry-After, and no stack.
                log.warning("database_unavailable", error_type=type(exc).__name__)
                if not response_started:
                    await reject(
                        errors.ServiceUnavailable(
                            "The database is not reachable right now.",
                            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
                        )
                    )
                return
            # Type and stack only: an exception's text can carry request data.
            stack = traceback.format_list(traceback.extract_tb(exc.__traceback__))
            log.error("unhandled_exception", error_type=type(exc).__name__, stack="".join(stack))
            if not response_started:
                await reject(errors.KeyhouseError())
        finally:
            self._access_log.info(
                "request",
                method=method,
                path=self._safe_path(scope["path"]),
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 2),
                client=(scope.get("client") or ("", 0))[0],
            )
            structlog.contextvars.reset_contextvars(**tokens)

    @staticmethod
    def _check_headers(scope: Scope) -> errors.KeyhouseError | None:
        total = 0
        seen: set[bytes] = set()
        for name, value in scope["headers"]:
            line = len(name) + len(value)
            if line > MAX_HEADER_LINE:
                return errors.BadRequest(
                    f"A request header is longer than {MAX_HEADER_LINE} bytes.",
                    fix=f"Send each header (name and value) in at most {MAX_HEADER_LINE} bytes.",
                )
            total += line
            if name in SINGLE_HEADERS:  # ASGI header names are lowercase
                if name in seen:
                    field = name.decode("ascii").title()
                    return errors.BadRequest(
                        f"The request has more than one {field} header.",
                        fix=f"Send one {field} header.",
                    )
                seen.add(name)
        if total > MAX_HEADERS_TOTAL:
            return errors.BadRequest(
                f"The request headers total more than {MAX_HEADERS_TOTAL} bytes.",
                fix=f"Send at most {MAX_HEADERS_TOTAL} bytes of headers (names and values).",
            )
        return None

    @staticmethod
    def _check_query(scope: Scope) -> errors.KeyhouseError | None:
        raw = scope.get("query_string", b"")
        if len(raw) > MAX_QUERY_BYTES:
            return errors.BadRequest(
                f"The query string is longer than {MAX_QUERY_BYTES} bytes.",
                fix="keyhouse's query parameters are ids, names, numbers and flags: send "
                f"at most {MAX_QUERY_BYTES} bytes of them.",
            )
        if raw and holds_key(raw.decode("latin-1")):
            # A fixed text: the key is not repeated, not even masked.
            return errors.KeyInQuery(
                "The query string holds an API key, or a value shaped like one (20 or "
                "more letters, digits, '-', '.', '_' or '~' that are not a keyhouse id), "
                "or a credential's parameter name; it was not used.",
            )
        return None

    def _looks_like_key(self, value: str) -> bool:
        return self.key_format.parse(value).kind is not Kind.FOREIGN

    def _safe_path(self, path: str) -> str:
        """The path with anything key-like masked: a key pasted into a URL stays out of logs.

        Imported keys have no shape of ours (any 20 to 200 URL-safe characters),
        so every segment of 20 characters or more that is not an id is masked:
        keyhouse's own segments are ids or words shorter than that.
        """
        if len(path) < IMPORTED_KEY_MIN_LENGTH and self._key_prefix.search(path) is None:
            return path
        parts = []
        for part in path.split("/"):
            if self._looks_like_key(part) or (
                len(part) >= IMPORTED_KEY_MIN_LENGTH and ID_RE.fullmatch(part) is None
            ):
                part = "[redacted]"
            parts.append(part)
        return "/".join(parts)

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[Receive, errors.KeyhouseError | None, bytes]:
        """Read the whole body (at most ``max_body`` bytes), then replay it to the app."""
        if scope["method"] not in _BODY_METHODS:
            return receive, None, b""
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        too_large = errors.PayloadTooLarge(
            fix=f"Send at most {self.max_body} bytes; keyhouse's requests are small JSON objects."
        )
        if declared is not None:
            try:
                if int(declared) > self.max_body:
                    return receive, too_large, b""
            except ValueError:
                bad = errors.BadRequest("The Content-Length header is not a number.")
                return receive, bad, b""
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return receive, too_large, b""
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            content_type = headers.get(b"content-type", b"").decode("latin-1")
            media = content_type.split(";", 1)[0].strip().lower()
            if media != "application/json" and not media.endswith("+json"):
                return receive, errors.UnsupportedMediaType(), b""
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay, None, body
