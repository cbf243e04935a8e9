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
refused by its scopes or       403     keyhouse's code: ``insufficient_scope``,
restrictions                           ``ip_not_allowed``, ``origin_not_allowed``,
                                       ``attribute_not_allowed``, ``secret_key_in_browser``
                                       (a code a newer keyhouse adds: 403 with that code);
                                       the message is keyhouse's ``reason``
two ``Authorization`` headers  400     ``validation_error`` (as keyhouse itself)
keyhouse unreachable or 503    503     ``service_unavailable`` (``Retry-After``)
=============================  ======  ==========================================

It fails closed: when keyhouse cannot be reached, times out, answers 503, or
refuses this service's own token (a 401/403/429 to the middleware: logged
on the ``keyhouse_client`` logger as an error), the request gets 503 and
never reaches the app. The middleware does not retry (``max_retries=0``):
keyhouse's own outage answer already comes after up to 2 s, and the
client of the protected API gets ``Retry-After`` to retry itself.

**Restricted keys.** Each verification sends the caller's address as ``ip``
(ASGI: ``scope["client"]``; WSGI: ``REMOTE_ADDR``) and the request's
``Origin`` header as ``origin``, so a key's ``ipAllowlist`` and
``allowedOrigins`` (and the account's refusal of secret keys from browsers)
hold. Behind a reverse proxy that address is the proxy's: make the app's
server set it from ``X-Forwarded-For`` for your proxy only (``uvicorn
--proxy-headers --forwarded-allow-ips=10.0.0.5``, gunicorn's
``forwarded_allow_ips``, Werkzeug's ``ProxyFix``), or every key with an
allowlist is refused ``ip_not_allowed``. ``scopes=[...]``: scopes every
request needs (sent to keyhouse). Per route, ``require_key(scopes=[...])``
(``keyhouse_client.fastapi``) or ``Identity.grants(scope)`` checks the
verified key's scopes locally, with keyhouse's rule (``messages:*`` grants
every ``messages:`` scope; a key without scopes grants all), instead of a
second verification per route. The middleware sends no ``attributes``: a
key that restricts attributes is refused (``attribute_not_allowed``) unless
the app verifies it itself (``client.verify(key, attributes=...)``).

**The cache.** Valid answers are kept in a bounded in-process LRU
(``cache_max_entries``, 10,000) for ``cache_ttl`` seconds (2), keyed by the
SHA-256 of the key (the key itself is never stored). A cached key is not
asked about again until its entry ends, so **a revoked key can still pass
for up to ``cache_ttl`` after the revocation** (in addition to keyhouse's
own cache bound, also 2 s by default): that is the revocation bound this
cache adds. Refusals are never cached (a key that was just created, or
whose quota was raised, passes on its next request). An expiring key's
entry ends at its ``expiresAt`` at the latest. An entry holds the ``ip``
and ``origin`` it was verified with; a request from another address (for a
key with an ``ipAllowlist``) or another origin (for a key with
``allowedOrigins``, and for every secret key, which the account may refuse
from browsers) is verified again rather than answered from the entry.

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
import ipaddress
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
from keyhouse_client._models import KeyRestrictions, KeyType, VerifyResult
from keyhouse_client._sync import Keyhouse

__all__ = [
    "STATE_KEY",
    "WSGI_ENVIRON_KEY",
    "Identity",
    "KeyhouseAuth",
    "KeyhouseRefusal",
    "KeyhouseWSGIAuth",
    "forbidden",
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
    # The key's scopes and restrictions (None: unrestricted), as keyhouse answered.
    scopes: tuple[str, ...] | None = None
    restrictions: KeyRestrictions | None = None

    def grants(self, scope: str) -> bool:
        """Whether the key's scopes include ``scope``: keyhouse's rule
        (``keys/restrictions.py::grants``): a key without scopes grants every
        scope, ``messages:*`` grants every ``messages:`` scope."""
        if self.scopes is None or scope in self.scopes:
            return True
        resource, colon, _ = scope.partition(":")
        return bool(colon) and bool(resource) and f"{resource}:*" in self.scopes

    def missing_scopes(self, scopes: Iterable[str]) -> list[str]:
        """The ``scopes`` the key does not grant, in order, once each."""
        out: list[str] = []
        for scope in scopes:
            if scope not in out and not self.grants(scope):
                out.append(scope)
        return out

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
            scopes=result.scopes,
            restrictions=result.restrictions,
        )

    def to_json(self) -> dict[str, Any]:
        """keyhouse's names: ``{accountId, keyId, environmentId, keyType, name}``, and
        ``scopes`` and ``restrictions`` when the key has them."""
        out: dict[str, Any] = {
            "accountId": self.account_id,
            "keyId": self.key_id,
            "environmentId": self.environment_id,
            "keyType": self.key_type,
            "name": self.name,
        }
        if self.scopes is not None:
            out["scopes"] = list(self.scopes)
        if self.restrictions is not None:
            out["restrictions"] = self.restrictions.to_json()
        return out


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


class KeyhouseRefusal(Exception):
    """Raised by the app (``keyhouse_client.fastapi.require_key(scopes=...)``) to
    refuse a request after the middleware let it in: ``KeyhouseAuth`` answers it
    with ``refusal`` in keyhouse's envelope when the app has not begun its
    answer (otherwise it propagates)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


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


# keyhouse's refusals of a restricted key: 403 with keyhouse's code, its
# ``reason`` as the message, and a fix that says what to change.
_FORBIDDEN_FIXES: dict[str, str] = {
    "insufficient_scope": "Use a key whose scopes include what this request needs.",
    "ip_not_allowed": "Use the key from an address in its ipAllowlist, or widen the allowlist.",
    "origin_not_allowed": "Use the key from one of its allowedOrigins, or add this origin.",
    "attribute_not_allowed": "Use a key allowed for this request's attributes.",
    "secret_key_in_browser": "Keep secret keys on servers; use a public key in browsers.",
}
_FORBIDDEN_MESSAGE = "The API key may not be used for this request."


def forbidden(code: str, message: str | None, fix: str | None = None) -> Refusal:
    """403 ``code``: a key that is valid but may not make this request."""
    return Refusal(
        403,
        code,
        message or _FORBIDDEN_MESSAGE,
        fix or _FORBIDDEN_FIXES.get(code, "Use a key allowed to make this request."),
    )


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
    known = _VERDICTS.get(result.code)
    if known is not None:
        return known
    # A refusal of a restricted key, or a code a newer keyhouse adds: the key
    # exists but may not pass; fail closed with keyhouse's own code and reason.
    return forbidden(result.code, result.reason)


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
        self._entries: OrderedDict[bytes, tuple[float, Identity, Context]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_entries > 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: bytes, context: Context = (None, None)) -> Identity | None:
        """The identity verified for this key, if the entry is still good for a
        request from ``context`` (``(ip, origin)``; see ``_same_context``)."""
        if not self.enabled:
            return None
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            deadline, identity, verified_for = entry
            expired = identity.expires_at is not None and identity.expires_at <= _utcnow()
            if time.monotonic() >= deadline or expired:
                del self._entries[digest]
                return None
            if not _same_context(identity, verified_for, context):
                return None  # verified again; its answer replaces the entry
            self._entries.move_to_end(digest)
            return identity

    def put(
        self,
        digest: bytes,
        result: VerifyResult,
        identity: Identity,
        context: Context = (None, None),
    ) -> None:
        """Keep a valid answer, unless its plan has a limit (see the module docstring)."""
        if not self.enabled or not result.valid or result.ratelimit is not None:
            return
        if result.usage is not None and result.usage.limit is not None:
            return
        # The deadline counts from the answer, not the request: a slow verify
        # lengthens nothing beyond the ttl from when keyhouse said it.
        with self._lock:
            self._entries[digest] = (time.monotonic() + self.ttl, identity, context)
            self._entries.move_to_end(digest)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


# (ip, origin) of a request, as sent to POST /verify.
Context = tuple[str | None, str | None]


def _same_context(identity: Identity, verified_for: Context, context: Context) -> bool:
    """Whether keyhouse's answer for ``verified_for`` holds for ``context`` too: the
    address matters to a key with an ipAllowlist; the origin to a key with
    allowedOrigins, and to every secret key (its account may refuse secret keys
    from browsers, which the answer does not show)."""
    r = identity.restrictions
    if r is not None and r.ip_allowlist is not None and verified_for[0] != context[0]:
        return False
    origin_matters = identity.key_type == "secret" or (
        r is not None and r.allowed_origins is not None
    )
    return not (origin_matters and verified_for[1] != context[1])


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


def _scopes_option(scopes: Sequence[str] | None) -> tuple[str, ...] | None:
    if scopes is None:
        return None
    if isinstance(scopes, str):
        raise ValueError("scopes is a list of scope names, not one string")
    return tuple(scopes)


def _text(value: Any, limit: int) -> str | None:
    """A request's Origin as POST /verify takes it: a non-empty string within
    keyhouse's length limit, else None (not sent: a key restricted to origins
    is then refused, failing closed, rather than the verification being a 400)."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value


def _address(value: Any) -> str | None:
    """The client's address if it is one (keyhouse answers 400 to an ``ip`` that
    is not), else None: a test client's ``"testclient"``, a Unix socket's
    path. A key with an ipAllowlist is then refused, failing closed."""
    text = _text(value, 64)
    if text is None:
        return None
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return None
    return text


def _asgi_host(client: Sequence[Any] | None) -> str | None:
    if not client:
        return None
    return _address(client[0])


def _origin_of(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    found = [value for name, value in headers if name.lower() == b"origin"]
    if len(found) != 1:
        return None  # none, or several: no one origin to check (fails closed)
    return _text(found[0].decode("latin-1"), 300)


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
        scopes: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.cache = VerifiedCache(cache_ttl, cache_max_entries)
        self.exclude_paths = tuple(exclude_paths)
        self.scopes = _scopes_option(scopes)
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

    async def authenticate(
        self,
        headers: Iterable[tuple[bytes, bytes]],
        client: Sequence[Any] | None = None,
    ) -> Identity | Refusal:
        """The identity of the request's key, or the answer that refuses it.

        ``headers``: the ASGI scope's; ``client``: its ``(host, port)`` (None:
        unknown; a key with an ipAllowlist is then refused)."""
        headers = list(headers)
        key = key_from_headers(headers)
        if isinstance(key, Refusal):
            return key
        context = (_asgi_host(client), _origin_of(headers))
        digest = _digest(key)
        cached = self.cache.get(digest, context)
        if cached is not None:
            return cached
        try:
            result = await self.client.verify(
                key, scopes=self.scopes, ip=context[0], origin=context[1]
            )
        except KeyhouseError as exc:
            return refusal_for_error(exc)
        decision = _decide(result)
        if isinstance(decision, Identity):
            self.cache.put(digest, result, decision, context)
        return decision

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, receive, self._closing_send(send))
            return
        if kind not in ("http", "websocket") or _excluded(scope["path"], self.exclude_paths):
            await self.app(scope, receive, send)
            return
        decision = await self.authenticate(scope["headers"], scope.get("client"))
        if isinstance(decision, Refusal):
            await _refuse(kind, decision, send)
            return
        # A new state dict for this request: the server's may be shared with
        # the lifespan state (ASGI copies it shallowly), and an identity must
        # never outlive its request.
        state = dict(scope.get("state") or {})
        state[STATE_KEY] = decision
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] in ("http.response.start", "websocket.accept"):
                started = True
            await send(message)

        try:
            await self.app({**scope, "state": state}, receive, tracking_send)
        except KeyhouseRefusal as exc:
            if started:
                raise
            await _refuse(kind, exc.refusal, send)

    def _closing_send(self, send: Send) -> Send:
        async def closing_send(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                await self.client.close()
            await send(message)

        return closing_send


async def _refuse(kind: str, refusal: Refusal, send: Send) -> None:
    if kind == "websocket":
        await send({"type": "websocket.close", "code": 1008})
        return
    status, headers, body = refusal.response()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(n.encode(), v.encode("latin-1")) for n, v in headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


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
        scopes: Sequence[str] | None = None,
    ) -> None:
        self.app = app
        self.cache = VerifiedCache(cache_ttl, cache_max_entries)
        self.exclude_paths = tuple(exclude_paths)
        self.scopes = _scopes_option(scopes)
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
        context = (_address(environ.get("REMOTE_ADDR")), _text(environ.get("HTTP_ORIGIN"), 300))
        digest = _digest(key)
        cached = self.cache.get(digest, context)
        if cached is not None:
            return cached
        try:
            result = self.client.verify(key, scopes=self.scopes, ip=context[0], origin=context[1])
        except KeyhouseError as exc:
            return refusal_for_error(exc)
        decision = _decide(result)
        if isinstance(decision, Identity):
            self.cache.put(digest, result, decision, context)
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
    403: "Forbidden",
    429: "Too Many Requests",
    503: "Service Unavailable",
}
