"""Protect an API with keyhouse keys: ``KeyhouseAuth`` (ASGI: FastAPI, Starlette,
Litestar, any ASGI app) and ``KeyhouseWSGIAuth`` (WSGI: Flask, Django).

For each HTTP request (and WebSocket handshake) whose path is not in
``exclude_paths``, the middleware reads the key from ``Authorization: Bearer
<key>``, asks keyhouse (``POST /verify``), and either passes the request on
with the verified ``Identity`` (ASGI: ``scope["state"]["keyhouse"]``, which
is ``request.state.keyhouse`` in Starlette, FastAPI and Litestar; WSGI:
``environ["keyhouse.identity"]``; ``identity_of`` reads either) or answers
itself with keyhouse's error envelope ``{trackingId, error: {code, message,
fix}}`` and the ``X-Tracking-Id`` header (keyhouse's id of the verification,
as in its log; the middleware's own ``req_...`` only when keyhouse was not
reached or not asked):

=============================  ======  ==========================================
the key                        status  ``error.code``
=============================  ======  ==========================================
no ``Authorization: Bearer``   401     ``missing_api_key``
fails its checksum             401     ``malformed_api_key``
unknown                        401     ``invalid_api_key``
revoked / expired              401     ``revoked_api_key`` / ``expired_api_key``
over the monthly quota         402     ``usage_limit_exceeded``
over the rate limit            429     ``rate_limited`` (``Retry-After``, ``RateLimit-*``)
two ``Authorization`` headers  400     ``validation_error`` (as keyhouse itself)
keyhouse unreachable or 503    503     ``service_unavailable`` (``Retry-After``)
=============================  ======  ==========================================

It fails closed: when keyhouse cannot be reached, times out, answers 503, or
refuses this service's own token (a 401/403/429 to the middleware: logged
on the ``keyhouse_client`` logger as an error), the request gets 503 and
never reaches the app. The middleware does not retry (``max_retries=0``):
keyhouse's own outage answer already comes after up to 2 s, and the
client of the protected API gets ``Retry-After`` to retry itself.

**The cache.** Valid answers are kept in a bounded in-process LRU
(``cache_max_entries``, 10,000) for ``cache_ttl`` seconds (2), keyed by the
SHA-256 of the key (the key itself is never stored). A cached key is not
asked about again until its entry ends, so **a revoked key can still pass
for up to ``cache_ttl`` after the revocation** (in addition to keyhouse's
own cache bound, also 2 s by default): that is the revocation bound this
cache adds. Refusals are never cached (a key that was just created, or
whose quota was raised, passes on its next request). An expiring key's
entry ends at its ``expiresAt`` at the latest.

**Metering.** A request answered from the cache is not sent to keyhouse,
so it is not counted against the account's plan. The middleware therefore
caches only answers that carry no limit: a key whose plan has a rate limit
(the answer has ``ratelimit``) or a monthly quota (``usage.limit``) is
verified on every request, so those limits hold exactly. For accounts
without limits, cached requests are missing from keyhouse's usage count
(``GET /account``, ``keyhouse account usage``); if you bill from that
count, set ``cache_ttl=0`` (no cache: every request is verified and
counted).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Protocol

import httpx

from keyhouse_client._async import AsyncKeyhouse
from keyhouse_client._errors import KeyhouseError, KeyhouseUnavailable
from keyhouse_client._models import KeyType, VerifyResult
from keyhouse_client._sync import Keyhouse

__all__ = [
    "STATE_KEY",
    "WSGI_ENVIRON_KEY",
    "Identity",
    "KeyhouseAuth",
    "KeyhouseWSGIAuth",
    "identity_of",
]

log = logging.getLogger("keyhouse_client")

STATE_KEY = "keyhouse"
WSGI_ENVIRON_KEY = "keyhouse.identity"

# keyhouse refuses an Authorization header longer than this (keys/verify.py).
_MAX_AUTHORIZATION_LENGTH = 1024
# Retry-After of a 503 when keyhouse gave none (unreachable): keyhouse's own
# outage answer uses 2 s.
_UNAVAILABLE_RETRY_AFTER = 2
_DEFAULT_MIDDLEWARE_TIMEOUT = httpx.Timeout(5.0, connect=2.0)

# ASGI's types, loose on purpose: Starlette types a scope as a MutableMapping,
# Litestar as TypedDicts (which are not MutableMappings to mypy); with Any,
# the middleware type-checks in both.
Scope = Any
Message = Any
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class ASGIApp(Protocol):
    def __call__(self, scope: Scope, receive: Receive, send: Send, /) -> Awaitable[None]: ...


StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass(frozen=True)
class Identity:
    """Who is calling: the verified key (``POST /verify``'s answer)."""

    account_id: str
    key_id: str
    key_type: KeyType
    name: str
    environment_id: str | None = None
    expires_at: datetime | None = None

    @classmethod
    def from_result(cls, result: VerifyResult) -> Identity:
        if result.account_id is None or result.key_id is None or result.key_type is None:
            raise ValueError("a valid verification without the key's identity")
        return cls(
            account_id=result.account_id,
            key_id=result.key_id,
            key_type=result.key_type,
            name=result.name or "",
            environment_id=result.environment_id,
            expires_at=result.expires_at,
        )

    def to_json(self) -> dict[str, Any]:
        """keyhouse's names: ``{accountId, keyId, environmentId, keyType, name}``."""
        return {
            "accountId": self.account_id,
            "keyId": self.key_id,
            "environmentId": self.environment_id,
            "keyType": self.key_type,
            "name": self.name,
        }


def identity_of(scope_or_environ: Mapping[str, Any]) -> Identity | None:
    """The identity the middleware verified: from an ASGI scope or a WSGI environ
    (``request.scope``, ``request.environ``); None on a path it did not cover."""
    found = scope_or_environ.get(WSGI_ENVIRON_KEY)
    if found is None:
        state = scope_or_environ.get("state")
        found = state.get(STATE_KEY) if isinstance(state, Mapping) else None
    return found if isinstance(found, Identity) else None


# -- the decision, shared by ASGI and WSGI ------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """An answer in keyhouse's envelope."""

    status: int
    code: str
    message: str
    fix: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    tracking_id: str | None = None

    def body(self, tracking_id: str) -> bytes:
        detail: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.fix is not None:
            detail["fix"] = self.fix
        return json.dumps({"trackingId": tracking_id, "error": detail}).encode()

    def response(self) -> tuple[int, list[tuple[str, str]], bytes]:
        # keyhouse's id of the verification when there was one (``refusal_for``,
        # ``refusal_for_error``); the middleware's own only when keyhouse was not
        # reached or not asked (no key, two Authorization headers).
        tracking_id = self.tracking_id or f"req_{uuid.uuid4().hex}"
        body = self.body(tracking_id)
        headers = [
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-tracking-id", tracking_id),
            ("cache-control", "no-store"),
            *self.headers,
        ]
        if self.status == 401:
            headers.append(("www-authenticate", "Bearer"))
        return self.status, headers, body


def _missing(message: str = "No API key was sent.", fix: str | None = None) -> Refusal:
    return Refusal(
        401,
        "missing_api_key",
        message,
        fix or "Send the header 'Authorization: Bearer <key>'.",
    )


_INVALID = Refusal(401, "invalid_api_key", "The API key is not valid.")

_VERDICTS: dict[str, Refusal] = {
    "malformed": Refusal(
        401,
        "malformed_api_key",
        "The API key is malformed: its checksum does not match.",
        "Copy the whole key again; a character was changed, added or lost.",
    ),
    "not_found": _INVALID,
    "revoked": Refusal(
        401,
        "revoked_api_key",
        "The API key has been revoked.",
        "Use another key of the account, or create a new one.",
    ),
    "expired": Refusal(
        401,
        "expired_api_key",
        "The API key has expired.",
        "Use the key that replaced it (see its roll), or create a new one.",
    ),
    "usage_exceeded": Refusal(
        402,
        "usage_limit_exceeded",
        "The account has used all requests of its plan for this period.",
        "Wait for the period to reset, or ask the operator for a larger plan.",
    ),
}


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> str | Refusal:
    """The Bearer token of the one ``Authorization`` header, or the refusal."""
    found = [value for name, value in headers if name.lower() == b"authorization"]
    if not found:
        return _missing()
    if len(found) > 1:
        return Refusal(
            400,
            "validation_error",
            "The request has more than one Authorization header.",
            "Send exactly one 'Authorization: Bearer <key>' header.",
        )
    return key_from_header(found[0].decode("latin-1"))


def key_from_header(header: str | None) -> str | Refusal:
    """``bearer_of`` of keyhouse (``keys/verify.py``), for the middleware's side."""
    if header is None:
        return _missing()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return _missing(
            "The Authorization header does not use the Bearer scheme.",
            "Send the header 'Authorization: Bearer <key>'.",
        )
    if len(header) > _MAX_AUTHORIZATION_LENGTH:
        return _INVALID
    return token


def refusal_for(result: VerifyResult) -> Refusal:
    """The answer to a verdict that is not ``valid``, with keyhouse's tracking id of it."""
    return dataclasses.replace(_refusal_for(result), tracking_id=result.tracking_id)


def _refusal_for(result: VerifyResult) -> Refusal:
    if result.code == "rate_limited":
        headers: list[tuple[str, str]] = []
        wait = 1
        if result.ratelimit is not None:
            rate = result.ratelimit
            # /verify gives the seconds until the bucket is full (reset) and its
            # size (limit), not the wait for one token; size/reset is the refill
            # rate, so one token comes within reset/size seconds (keyhouse's own
            # 429 uses that wait: limits/limiter.py, _rate_state).
            wait = max(1, math.ceil(rate.reset / max(1, rate.limit)))
            headers += [
                ("ratelimit-limit", str(rate.limit)),
                ("ratelimit-remaining", str(rate.remaining)),
                ("ratelimit-reset", str(rate.reset)),
            ]
        return Refusal(
            429,
            "rate_limited",
            "Too many requests.",
            f"Retry after {wait} s (Retry-After).",
            headers=(("retry-after", str(wait)), *headers),
        )
    return _VERDICTS.get(result.code, _INVALID)


def refusal_for_error(exc: KeyhouseError) -> Refusal:
    """Fail closed: what the protected API answers when keyhouse gave no verdict."""
    if exc.status == 400:
        # keyhouse refused the key's shape (e.g. over 1024 characters): no key of its.
        return dataclasses.replace(_INVALID, tracking_id=exc.tracking_id)
    if not isinstance(exc, KeyhouseUnavailable):
        # This service's token is wrong, not allowed, or rate limited for its
        # failures: a configuration error of the service, not the caller's.
        log.error(
            "keyhouse_refused_verification",
            extra={"status": exc.status, "code": exc.code, "tracking_id": exc.tracking_id},
        )
    wait = _UNAVAILABLE_RETRY_AFTER
    if exc.retry_after is not None:
        wait = max(1, math.ceil(exc.retry_after))
    return Refusal(
        503,
        "service_unavailable",
        "API keys cannot be verified right now.",
        f"Retry after {wait} s (Retry-After).",
        headers=(("retry-after", str(wait)),),
        # keyhouse's id when it answered (a 503, a refused token): the logs match.
        tracking_id=exc.tracking_id,
    )


class VerifiedCache:
    """Valid identities by SHA-256 of the key: a thread-safe LRU with a TTL."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        if not (ttl >= 0 and math.isfinite(ttl)):
            raise ValueError("cache_ttl must be a finite number of seconds, 0 or more")
        if max_entries < 0:
            raise ValueError("cache_max_entries must be 0 or more")
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes) -> Identity | None:
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            deadline, identity = entry
            expired = identity.expires_at is not None and identity.expires_at <= _utcnow()
            if time.monotonic() >= deadline or expired:
                del self._entries[digest]
                return None
            self._entries.move_to_end(digest)
            return identity

    def put(self, digest: bytes, result: VerifyResult, identity: Identity) -> None:
        """Keep a valid answer, unless its plan has a limit (see the module docstring)."""
        if not self.enabled or not result.valid or result.ratelimit is not None:
            return
        if result.usage is not None and result.usage.limit is not None:
            return
        # The deadline counts from the answer, not the request: a slow verify
        # lengthens nothing beyond the ttl from when keyhouse said it.
        with self._lock:
            self._entries[digest] = (time.monotonic() + self.ttl, identity)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)  # noqa: UP017 - the package supports Python 3.10


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()


def _excluded(path: str, exclude_paths: Sequence[str]) -> bool:
    for pattern in exclude_paths:
        if pattern.endswith("*"):
            if path.startswith(pattern[:-1]):
                return True
        elif path == pattern:
            return True
    return False


def _decide(result: VerifyResult) -> Identity | Refusal:
    if not result.valid:
        return refusal_for(result)
    return Identity.from_result(result)


# -- ASGI ----------------------------------------------------------------------------------


class KeyhouseAuth:
    """ASGI middleware: every request needs a valid keyhouse key.

    ``KeyhouseAuth(app, base_url, token)``: ``token`` is an admin token or,
    better, a verify-only token (``KEYHOUSE_VERIFY_TOKENS``). Or pass
    ``client=AsyncKeyhouse(...)`` of your own instead of both.
    ``cache_ttl`` (seconds, 2; 0: no cache) and ``cache_max_entries``
    (10,000): see the module docstring for what the cache costs.
    ``exclude_paths``: paths served without a key (``"/healthz"``; a trailing
    ``*`` matches a prefix: ``"/public/*"``). ``timeout``: of each
    verification (5 s, 2 s to connect). Lifespan events pass through, and
    the client is closed on ``lifespan.shutdown``.

    A refused WebSocket handshake is closed with code 1008 (the server
    answers the handshake 403). Litestar builds middleware once per route:
    there, pass one ``client`` for all and close it in ``on_shutdown``
    (``examples/litestar_app.py``).
    """

    def __init__(
        self,
        app: ASGIApp,
        base_url: str | None = None,
        token: str | None = None,
        *,
        client: AsyncKeyhouse | None = None,
        cache_ttl: float = 2.0,
        cache_max_entries: int = 10_000,
        exclude_paths: Sequence[str] = (),
        timeout: float | httpx.Timeout | None = None,
    ) -> None:
        self.app = app
        self.cache = VerifiedCache(cache_ttl, cache_max_entries)
        self.exclude_paths = tuple(exclude_paths)
        if client is None:
            if base_url is None or token is None:
                raise ValueError("KeyhouseAuth needs base_url and token, or client")
            client = AsyncKeyhouse(
                base_url,
                token,
                timeout=_DEFAULT_MIDDLEWARE_TIMEOUT if timeout is None else timeout,
                max_retries=0,
            )
        self.client = client

    async def authenticate(self, headers: Iterable[tuple[bytes, bytes]]) -> Identity | Refusal:
        """The identity of the request's key, or the answer that refuses it."""
        key = key_from_headers(headers)
        if isinstance(key, Refusal):
            return key
        digest = _digest(key)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        try:
            result = await self.client.verify(key)
        except KeyhouseError as exc:
            return refusal_for_error(exc)
        decision = _decide(result)
        if isinstance(decision, Identity):
            self.cache.put(digest, result, decision)
        return decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._closing_send(send))
            return
        if kind not in ("http", "websocket") or _excluded(scope["path"], self.exclude_paths):
            await self.app(scope, receive, send)
            return
        decision = await self.authenticate(scope["headers"])
        if isinstance(decision, Refusal):
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            status, headers, body = decision.response()
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(n.encode(), v.encode("latin-1")) for n, v in headers],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        # A new state dict for this request: the server's may be shared with
        # the lifespan state (ASGI copies it shallowly), and an identity must
        # never outlive its request.
        state = dict(scope.get("state") or {})
        state[STATE_KEY] = decision
        await self.app({**scope, "state": state}, receive, send)

    def _closing_send(self, send: Send) -> Send:
        async def closing_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.client.close()
            await send(message)

        return closing_send


# -- WSGI ----------------------------------------------------------------------------------


class KeyhouseWSGIAuth:
    """WSGI middleware (Flask, Django): ``KeyhouseAuth``'s rules with the sync client.

    ``app.wsgi_app = KeyhouseWSGIAuth(app.wsgi_app, base_url, token)`` (Flask);
    the identity is ``environ["keyhouse.identity"]`` (``identity_of(request.environ)``).
    Options as ``KeyhouseAuth``'s; ``client=Keyhouse(...)`` of your own instead of
    ``base_url`` and ``token``; ``close()`` closes the client it made.
    """

    def __init__(
        self,
        app: WSGIApp,
        base_url: str | None = None,
        token: str | None = None,
        *,
        client: Keyhouse | None = None,
        cache_ttl: float = 2.0,
        cache_max_entries: int = 10_000,
        exclude_paths: Sequence[str] = (),
        timeout: float | httpx.Timeout | None = None,
    ) -> None:
        self.app = app
        self.cache = VerifiedCache(cache_ttl, cache_max_entries)
        self.exclude_paths = tuple(exclude_paths)
        if client is None:
            if base_url is None or token is None:
                raise ValueError("KeyhouseWSGIAuth needs base_url and token, or client")
            client = Keyhouse(
                base_url,
                token,
                timeout=_DEFAULT_MIDDLEWARE_TIMEOUT if timeout is None else timeout,
                max_retries=0,
            )
        self.client = client

    def authenticate(self, environ: dict[str, Any]) -> Identity | Refusal:
        key = key_from_header(environ.get("HTTP_AUTHORIZATION"))
        if isinstance(key, Refusal):
            return key
        digest = _digest(key)
        cached = self.cache.get(digest)
        if cached is not None:
            return cached
        try:
            result = self.client.verify(key)
        except KeyhouseError as exc:
            return refusal_for_error(exc)
        decision = _decide(result)
        if isinstance(decision, Identity):
            self.cache.put(digest, result, decision)
        return decision

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if _excluded(environ.get("PATH_INFO") or "/", self.exclude_paths):
            return self.app(environ, start_response)
        # WSGI servers may join repeated headers into one value, so two
        # Authorization headers can arrive as "Bearer a, Bearer b": that is
        # no key keyhouse knows, and is refused 401 invalid_api_key.
        decision = self.authenticate(environ)
        if isinstance(decision, Refusal):
            status, headers, body = decision.response()
            reason = _REASONS.get(status, "Error")
            start_response(f"{status} {reason}", headers)
            return [body]
        environ[WSGI_ENVIRON_KEY] = decision
        return self.app(environ, start_response)

    def close(self) -> None:
        self.client.close()


_REASONS = {
    400: "Bad Request",
    401: "Unauthorized",
    402: "Payment Required",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
