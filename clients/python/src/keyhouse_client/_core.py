"""What the sync and the async clients share: each call as data, the answer read
once, and the retry policy.

A call is a ``Call``: method, path, query, body, and how to read a 2xx body.
``Keyhouse`` and ``AsyncKeyhouse`` differ only in how they send it and how
they wait between attempts (``_sync.py``, ``_async.py``).

Retries (``RetryPolicy``): on 429 and 503 only, honouring ``Retry-After``
(seconds, or an HTTP date), at most ``max_retries`` times, and never when
``Retry-After`` asks for more than ``max_retry_wait`` seconds (the error is
raised at once, with ``retry_after`` set, rather than blocking a caller for
that long). A connection that could not be made (``ConnectError``,
``ConnectTimeout``: the request never left) is retried the same way. A 503
can hide a write that committed (keyhouse's README, "Retrying a write"), so
every ``POST`` that writes carries an ``Idempotency-Key``, one per call and
the same on each of its attempts: a retry gets the first answer again
instead of writing twice. ``PATCH`` sets values (a name, limits): applying
it twice ends in the same state. Other statuses (400, 401, 402, 404, 409,
500, …) are never retried.
"""

from __future__ import annotations

import dataclasses
import email.utils
import math
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar, cast
from urllib.parse import quote

import httpx

from keyhouse_client import _errors
from keyhouse_client._errors import KeyhouseError, KeyhouseUnavailable
from keyhouse_client._models import (
    Account,
    ApiKey,
    CreatedAccount,
    Environment,
    EventPage,
    KeyRestrictions,
    KeyType,
    LimitsUpdate,
    VerifyResult,
)
from keyhouse_client._version import __version__

__all__ = ["DEFAULT_TIMEOUT", "USER_AGENT", "Call", "RetryPolicy"]

USER_AGENT = f"keyhouse-client-python/{__version__}"

# Every call is bounded: httpx's own default is 5 s for each phase; keyhouse
# answers a verification in well under a millisecond of its CPU, and its
# slowest designed answer (503 while its database is away) comes after 2 s.
DEFAULT_TIMEOUT = httpx.Timeout(10.0, connect=5.0)

T = TypeVar("T")

_RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class Call(Generic[T]):
    """One API call. ``write``: a ``POST`` that changes something (sends an
    ``Idempotency-Key``). ``json`` is ``None`` for no body."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: dict[str, str] = field(default_factory=dict)
    json: Any = None
    write: bool = False
    idempotency_key: str | None = None

    def headers(self) -> dict[str, str]:
        """The call's own headers, made once per call (the same for each attempt)."""
        if self.write and self.method == "POST":
            return {"Idempotency-Key": self.idempotency_key or str(uuid.uuid4())}
        return {}


def auth_headers(token: str) -> dict[str, str]:
    if not token or any(c in token for c in "\r\n"):
        # Not the token itself: an error message may be logged.
        raise ValueError("the token is empty or holds a line break")
    return {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
    }


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a call again, and after how long (seconds)."""

    max_retries: int = 2
    max_retry_wait: float = 10.0
    # Without Retry-After: 0.5 s, 1 s, 2 s, …, capped by max_retry_wait.
    backoff: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if not (self.max_retry_wait >= 0 and math.isfinite(self.max_retry_wait)):
            raise ValueError("max_retry_wait must be a finite number of seconds, 0 or more")

    def _default_wait(self, attempt: int) -> float:
        return min(self.max_retry_wait, self.backoff * 2.0**attempt)

    def after_response(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before attempt ``attempt + 1``, or None: do not retry."""
        if response.status_code not in _RETRY_STATUSES or attempt >= self.max_retries:
            return None
        wait = retry_after(response)
        if wait is None:
            return self._default_wait(attempt)
        if wait > self.max_retry_wait:
            return None
        return wait

    def after_transport_error(self, exc: httpx.TransportError, attempt: int) -> float | None:
        # Only a connection that was never made: the request did not leave,
        # so nothing can have happened. A read timeout may hide a write.
        if attempt >= self.max_retries or not isinstance(
            exc, (httpx.ConnectError, httpx.ConnectTimeout)
        ):
            return None
        return self._default_wait(attempt)


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def transport_error(exc: httpx.TransportError) -> KeyhouseUnavailable:
    """A failure to reach keyhouse, as ``KeyhouseUnavailable`` (status None)."""
    if isinstance(exc, httpx.ConnectTimeout):
        code, what = _errors.CONNECT_ERROR, "connecting timed out"
    elif isinstance(exc, httpx.ConnectError):
        code, what = _errors.CONNECT_ERROR, "the connection could not be made"
    elif isinstance(exc, httpx.TimeoutException):
        code, what = _errors.TIMEOUT, "keyhouse did not answer in time"
    else:
        code, what = _errors.TRANSPORT_ERROR, f"the exchange failed ({type(exc).__name__})"
    return KeyhouseUnavailable(
        None,
        code,
        f"keyhouse could not be reached: {what}.",
        fix="Check that keyhouse runs at the base URL and answers; retry later.",
    )


def error_from(response: httpx.Response) -> KeyhouseError:
    """The error of a non-2xx answer, from keyhouse's envelope when it is one."""
    status = response.status_code
    header_id = response.headers.get("x-tracking-id")
    wait = retry_after(response)
    kind = KeyhouseUnavailable if status == 503 else KeyhouseError
    try:
        body = response.json()
        detail = body["error"]
        code, message = detail["code"], detail["message"]
        if not isinstance(code, str) or not isinstance(message, str):
            raise TypeError("code and message are not strings")
    except (ValueError, KeyError, TypeError):
        return kind(
            status,
            _errors.UNEXPECTED_RESPONSE,
            f"keyhouse answered {status} {response.reason_phrase} with a body that is "
            "not its error envelope (a proxy's page, or not keyhouse at this URL).",
            fix="Check the base URL; keyhouse answers every error as JSON.",
            tracking_id=header_id,
            retry_after=wait,
        )

    def text(name: str) -> str | None:
        value = detail.get(name)
        return value if isinstance(value, str) else None

    tracking = body.get("trackingId")
    return kind(
        status,
        code,
        message,
        fix=text("fix"),
        tracking_id=tracking if isinstance(tracking, str) else header_id,
        provider=text("provider"),
        provider_code=text("providerCode"),
        retry_after=wait,
    )


def finish(call: Call[T], response: httpx.Response) -> T:
    """The call's result from a final answer; ``KeyhouseError`` for an error."""
    if not response.is_success:
        raise error_from(response)
    try:
        value = call.read(response.json())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyhouseError(
            response.status_code,
            _errors.UNEXPECTED_RESPONSE,
            f"keyhouse answered {response.status_code} with a body this client cannot "
            f"read ({type(exc).__name__}).",
            fix="Check the base URL, and that this client's version fits the server's.",
            tracking_id=response.headers.get("x-tracking-id"),
        ) from None
    if isinstance(value, VerifyResult):
        # The middleware answers a refusal with keyhouse's id of the verification,
        # so the protected API's answer and keyhouse's log line match.
        tracked = dataclasses.replace(value, tracking_id=response.headers.get("x-tracking-id"))
        return cast(T, tracked)
    return value


# -- the calls -------------------------------------------------------------------------


def _segment(value: str) -> str:
    """An id as one path segment: nothing in it can reach another route."""
    if not isinstance(value, str) or not value:
        raise ValueError("an id must be a non-empty string")
    return quote(value, safe="")


def _timestamp(value: datetime | str) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("expires_at needs a time zone (e.g. datetime.now(UTC))")
        return value.isoformat()
    return value


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _keys(body: Any) -> list[ApiKey]:
    return [ApiKey.from_json(k) for k in body["keys"]]


def _accounts(body: Any) -> list[Account]:
    return [Account.from_json(a) for a in body["accounts"]]


def _environments(body: Any) -> list[Environment]:
    return [Environment.from_json(e) for e in body["environments"]]


def verify_options(
    scopes: Sequence[str] | None,
    ip: str | None,
    origin: str | None,
    attributes: Mapping[str, str] | None,
) -> dict[str, Any]:
    """``POST /verify``'s optional members, only those given."""
    body: dict[str, Any] = {}
    if scopes is not None:
        if isinstance(scopes, str):
            raise TypeError("scopes is a list of scope names, not one string")
        body["scopes"] = list(scopes)
    if ip is not None:
        body["ip"] = ip
    if origin is not None:
        body["origin"] = origin
    if attributes is not None:
        body["attributes"] = dict(attributes)
    return body


def verify(key: str, options: dict[str, Any]) -> Call[VerifyResult]:
    return Call("POST", "/verify", VerifyResult.from_json, json={**options, "key": key})


def key_filters(
    environment_id: str | None, key_type: KeyType | None, revoked: bool | None
) -> dict[str, str]:
    params: dict[str, str] = {}
    if environment_id is not None:
        params["environmentId"] = environment_id
    if key_type is not None:
        params["keyType"] = key_type
    if revoked is not None:
        params["revoked"] = _bool(revoked)
    return params


def create_key_body(
    name: str,
    key_type: KeyType,
    environment_id: str | None,
    expires_at: datetime | str | None,
    scopes: Sequence[str] | None = None,
    restrictions: KeyRestrictions | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": name, "keyType": key_type}
    if environment_id is not None:
        body["environmentId"] = environment_id
    if expires_at is not None:
        body["expiresAt"] = _timestamp(expires_at)
    if scopes is not None:
        if isinstance(scopes, str):
            raise TypeError("scopes is a list of scope names, not one string")
        body["scopes"] = list(scopes)
    if restrictions is not None:
        body["restrictions"] = (
            restrictions.to_json()
            if isinstance(restrictions, KeyRestrictions)
            else dict(restrictions)
        )
    return body


def list_keys(prefix: str, params: dict[str, str]) -> Call[list[ApiKey]]:
    return Call("GET", prefix, _keys, params=params)


def create_key(prefix: str, body: dict[str, Any], idem: str | None) -> Call[ApiKey]:
    return Call("POST", prefix, ApiKey.from_json, json=body, write=True, idempotency_key=idem)


def get_key(prefix: str, key_id: str) -> Call[ApiKey]:
    return Call("GET", f"{prefix}/{_segment(key_id)}", ApiKey.from_json)


def rename_key(prefix: str, key_id: str, name: str) -> Call[ApiKey]:
    return Call("PATCH", f"{prefix}/{_segment(key_id)}", ApiKey.from_json, json={"name": name})


def revoke_key(prefix: str, key_id: str, force: bool, idem: str | None) -> Call[ApiKey]:
    return Call(
        "POST",
        f"{prefix}/{_segment(key_id)}/revoke",
        ApiKey.from_json,
        params={"force": "true"} if force else {},
        write=True,
        idempotency_key=idem,
    )


def roll_key(
    prefix: str, key_id: str, expires_in_seconds: int | None, idem: str | None
) -> Call[ApiKey]:
    return Call(
        "POST",
        f"{prefix}/{_segment(key_id)}/roll",
        ApiKey.from_json,
        json=None if expires_in_seconds is None else {"expiresInSeconds": expires_in_seconds},
        write=True,
        idempotency_key=idem,
    )


def import_key(
    account_id: str,
    key: str,
    name: str,
    key_type: KeyType,
    environment_id: str | None,
    idem: str | None,
) -> Call[ApiKey]:
    body: dict[str, Any] = {"key": key, "name": name, "keyType": key_type}
    if environment_id is not None:
        body["environmentId"] = environment_id
    return Call(
        "POST",
        f"/admin/accounts/{_segment(account_id)}/keys/import",
        ApiKey.from_json,
        json=body,
        write=True,
        idempotency_key=idem,
    )


def admin_keys_of(account_id: str) -> str:
    return f"/admin/accounts/{_segment(account_id)}/keys"


def create_account(
    name: str, limits: LimitsUpdate | None, idem: str | None
) -> Call[CreatedAccount]:
    body: dict[str, Any] = {"name": name}
    if limits is not None:
        body["limits"] = dict(limits)
    return Call(
        "POST",
        "/admin/accounts",
        CreatedAccount.from_json,
        json=body,
        write=True,
        idempotency_key=idem,
    )


def list_accounts() -> Call[list[Account]]:
    return Call("GET", "/admin/accounts", _accounts)


def get_account(account_id: str) -> Call[Account]:
    return Call("GET", f"/admin/accounts/{_segment(account_id)}", Account.from_json)


def update_account(account_id: str, name: str | None, limits: LimitsUpdate | None) -> Call[Account]:
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if limits is not None:
        body["limits"] = dict(limits)
    return Call("PATCH", f"/admin/accounts/{_segment(account_id)}", Account.from_json, json=body)


def my_account() -> Call[Account]:
    return Call("GET", "/account", Account.from_json)


def list_environments() -> Call[list[Environment]]:
    return Call("GET", "/environments", _environments)


def create_environment(name: str, idem: str | None) -> Call[Environment]:
    return Call(
        "POST",
        "/environments",
        Environment.from_json,
        json={"name": name},
        write=True,
        idempotency_key=idem,
    )


def events_page(
    path: str, limit: int | None, starting_after: str | None, account_id: str | None = None
) -> Call[EventPage]:
    params: dict[str, str] = {}
    if limit is not None:
        params["limit"] = str(limit)
    if starting_after is not None:
        params["startingAfter"] = starting_after
    if account_id is not None:
        params["accountId"] = account_id
    return Call("GET", path, EventPage.from_json, params=params)


def next_cursor(page: EventPage) -> str | None:
    """The ``starting_after`` of the page after ``page``, or None at the end."""
    if not page.has_more or not page.events:
        return None
    return page.events[-1].id


def build_http_kwargs(base_url: str, timeout: float | httpx.Timeout | None) -> dict[str, Any]:
    if not base_url.startswith(("http://", "https://")):
        raise ValueError("base_url must start with http:// or https://")
    return {
        "base_url": base_url.rstrip("/"),
        "timeout": DEFAULT_TIMEOUT if timeout is None else timeout,
    }


def request_kwargs(call: Call[Any], headers: dict[str, str]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"headers": headers}
    if call.params:
        kwargs["params"] = call.params
    if call.json is not None:
        kwargs["json"] = call.json
    return kwargs
