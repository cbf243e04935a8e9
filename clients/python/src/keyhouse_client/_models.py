"""What keyhouse answers, as frozen dataclasses (attribute names in snake_case).

Each ``from_json`` reads keyhouse's JSON object: members it does not know are
ignored (a newer keyhouse may add some), a required member that is missing
raises ``KeyError``/``TypeError``/``ValueError``, which the client reports as
``KeyhouseError`` ``unexpected_response``. Timestamps are timezone-aware
``datetime`` objects in UTC.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypedDict

__all__ = [
    "Account",
    "AccountUsage",
    "ApiKey",
    "CreatedAccount",
    "Environment",
    "Event",
    "EventActor",
    "EventPage",
    "KeyRestrictions",
    "KeyType",
    "Limits",
    "LimitsUpdate",
    "RateLimitInfo",
    "UsageInfo",
    "VerifyCode",
    "VerifyResult",
]

KeyType = Literal["secret", "public"]
# The codes keyhouse answers today. ``VerifyResult.code`` may also be a code a
# newer keyhouse adds: every code but "valid" is a refusal.
VerifyCode = Literal[
    "valid",
    "malformed",
    "not_found",
    "revoked",
    "expired",
    "usage_exceeded",
    "rate_limited",
    "insufficient_scope",
    "ip_not_allowed",
    "origin_not_allowed",
    "attribute_not_allowed",
    "secret_key_in_browser",
]


def parse_time(value: str) -> datetime:
    """keyhouse's RFC 3339 timestamp (``2026-11-26T20:23:02.634Z``) as an aware datetime."""
    # datetime.fromisoformat reads a trailing "Z" only from Python 3.11 on.
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("timestamp without a time zone")
    return parsed


def _time_or_none(value: Any) -> datetime | None:
    return None if value is None else parse_time(str(value))


def _str(data: dict[str, Any], name: str) -> str:
    value = data[name]
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def _str_or_none(data: dict[str, Any], name: str) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} is not a string")
    return value


def _int_or_none(data: dict[str, Any], name: str) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} is not an integer")
    return value


def _int(data: dict[str, Any], name: str) -> int:
    value = _int_or_none(data, name)
    if value is None:
        raise KeyError(name)
    return value


def _key_type(value: Any) -> KeyType:
    if value == "secret":
        return "secret"
    if value == "public":
        return "public"
    raise ValueError("keyType is neither secret nor public")


def _strings(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError(f"{name} is not a list of strings")
    return tuple(value)


def _scopes_or_none(data: dict[str, Any]) -> tuple[str, ...] | None:
    value = data.get("scopes")
    return None if value is None else _strings(value, "scopes")


@dataclass(frozen=True)
class KeyRestrictions:
    """Where a key may be used (keyhouse's ``restrictions``); ``None`` members do not
    restrict. ``ip_allowlist``: CIDRs; ``allowed_origins``: ``scheme://host[:port]``
    (``https://*.example.com``); ``attributes``: name -> the values allowed."""

    ip_allowlist: tuple[str, ...] | None = None
    allowed_origins: tuple[str, ...] | None = None
    attributes: dict[str, tuple[str, ...]] | None = None

    @classmethod
    def from_json(cls, data: Any) -> KeyRestrictions | None:
        if data is None:
            return None
        if not isinstance(data, dict):
            raise TypeError("restrictions is not an object")
        ips = data.get("ipAllowlist")
        origins = data.get("allowedOrigins")
        attributes = data.get("attributes")
        if attributes is not None and not isinstance(attributes, dict):
            raise TypeError("restrictions.attributes is not an object")
        return cls(
            ip_allowlist=None if ips is None else _strings(ips, "ipAllowlist"),
            allowed_origins=None if origins is None else _strings(origins, "allowedOrigins"),
            attributes=None
            if attributes is None
            else {str(k): _strings(v, "attributes") for k, v in attributes.items()},
        )

    def to_json(self) -> dict[str, Any]:
        """keyhouse's shape, members only when set (for ``keys.create(restrictions=...)``)."""
        out: dict[str, Any] = {}
        if self.ip_allowlist is not None:
            out["ipAllowlist"] = list(self.ip_allowlist)
        if self.allowed_origins is not None:
            out["allowedOrigins"] = list(self.allowed_origins)
        if self.attributes is not None:
            out["attributes"] = {k: list(v) for k, v in self.attributes.items()}
        return out


@dataclass(frozen=True)
class ApiKey:
    """The seed's key object (``GET /keys``), every member.

    ``key`` is the full key string (masked, ``sk_…Ab12``, where the server
    lists keys masked or cannot decrypt it: then ``recoverable`` is False).
    ``environment_id``, ``last_used_at`` and ``expires_at`` are ``None`` when
    keyhouse leaves them out.
    """

    id: str
    key: str
    key_type: KeyType
    account_id: str
    name: str
    revoked: bool
    created_at: datetime
    environment_id: str | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    recoverable: bool = True
    scopes: tuple[str, ...] | None = None
    restrictions: KeyRestrictions | None = None

    def __repr__(self) -> str:
        # Never the key string: reprs end up in logs and tracebacks.
        return f"ApiKey(id={self.id!r}, key_type={self.key_type!r}, name={self.name!r})"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ApiKey:
        revoked = data["revoked"]
        if not isinstance(revoked, bool):
            raise TypeError("revoked is not a boolean")
        return cls(
            id=_str(data, "id"),
            key=_str(data, "key"),
            key_type=_key_type(data["keyType"]),
            account_id=_str(data, "accountId"),
            name=_str(data, "name"),
            revoked=revoked,
            created_at=parse_time(_str(data, "createdAt")),
            environment_id=_str_or_none(data, "environmentId"),
            last_used_at=_time_or_none(data.get("lastUsedAt")),
            expires_at=_time_or_none(data.get("expiresAt")),
            recoverable=data.get("recoverable", True) is not False,
            scopes=_scopes_or_none(data),
            restrictions=KeyRestrictions.from_json(data.get("restrictions")),
        )


class LimitsUpdate(TypedDict, total=False):
    """A plan change, as keyhouse's JSON: only the members given change; ``None`` is unlimited."""

    maxKeys: int | None
    monthlyRequests: int | None
    ratePerSecond: int | None
    burst: int | None


@dataclass(frozen=True)
class Limits:
    """An account's plan; ``None`` is unlimited."""

    max_keys: int | None
    monthly_requests: int | None
    rate_per_second: int | None
    burst: int | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Limits:
        return cls(
            max_keys=_int_or_none(data, "maxKeys"),
            monthly_requests=_int_or_none(data, "monthlyRequests"),
            rate_per_second=_int_or_none(data, "ratePerSecond"),
            burst=_int_or_none(data, "burst"),
        )


@dataclass(frozen=True)
class AccountUsage:
    """``GET /account``'s usage: requests counted this period (a UTC calendar month)."""

    requests: int
    period_start: datetime
    resets_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AccountUsage:
        return cls(
            requests=_int(data, "requests"),
            period_start=parse_time(_str(data, "periodStart")),
            resets_at=parse_time(_str(data, "resetsAt")),
        )


@dataclass(frozen=True)
class Account:
    """An account; ``usage`` only from the account API's ``GET /account``."""

    id: str
    name: str
    limits: Limits
    created_at: datetime
    usage: AccountUsage | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Account:
        usage = data.get("usage")
        return cls(
            id=_str(data, "id"),
            name=_str(data, "name"),
            limits=Limits.from_json(data["limits"]),
            created_at=parse_time(_str(data, "createdAt")),
            usage=None if usage is None else AccountUsage.from_json(usage),
        )


@dataclass(frozen=True)
class CreatedAccount:
    """``POST /admin/accounts``: the account and its first secret key (in full)."""

    account: Account
    key: ApiKey

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CreatedAccount:
        return cls(Account.from_json(data["account"]), ApiKey.from_json(data["key"]))


@dataclass(frozen=True)
class Environment:
    id: str
    account_id: str
    name: str
    created_at: datetime

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Environment:
        return cls(
            id=_str(data, "id"),
            account_id=_str(data, "accountId"),
            name=_str(data, "name"),
            created_at=parse_time(_str(data, "createdAt")),
        )


@dataclass(frozen=True)
class EventActor:
    """Who acted: ``type`` ``key`` (``id`` the key's id), ``admin``, ``cli`` or ``system``."""

    type: str
    id: str | None = None


@dataclass(frozen=True)
class Event:
    """One audit event (``key.created``, ``key.revoked``, …). ``account_id``: on the
    operator's ``events.list`` only (the account API's events are the caller's)."""

    id: str
    type: str
    actor: EventActor
    created_at: datetime
    key_id: str | None = None
    environment_id: str | None = None
    ip: str | None = None
    user_agent: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    account_id: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        actor = data["actor"]
        extra = data.get("data") or {}
        if not isinstance(extra, dict):
            raise TypeError("data is not an object")
        return cls(
            id=_str(data, "id"),
            type=_str(data, "type"),
            actor=EventActor(type=_str(actor, "type"), id=_str_or_none(actor, "id")),
            created_at=parse_time(_str(data, "createdAt")),
            key_id=_str_or_none(data, "keyId"),
            environment_id=_str_or_none(data, "environmentId"),
            ip=_str_or_none(data, "ip"),
            user_agent=_str_or_none(data, "userAgent"),
            data=extra,
            account_id=_str_or_none(data, "accountId"),
        )


@dataclass(frozen=True)
class EventPage:
    """One page of events, newest first; ``has_more``: older ones follow (pass the
    last event's id as ``starting_after``)."""

    events: list[Event]
    has_more: bool

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EventPage:
        has_more = data["hasMore"]
        if not isinstance(has_more, bool):
            raise TypeError("hasMore is not a boolean")
        return cls([Event.from_json(e) for e in data["events"]], has_more)


@dataclass(frozen=True)
class RateLimitInfo:
    """The key's token bucket after a verification: ``limit`` (burst), ``remaining``,
    ``reset`` (seconds until the bucket is full again)."""

    limit: int
    remaining: int
    reset: int


@dataclass(frozen=True)
class UsageInfo:
    """The account's usage this period; ``limit`` None when the plan has no monthly limit."""

    requests: int
    resets_at: datetime
    limit: int | None = None


@dataclass(frozen=True)
class VerifyResult:
    """``POST /verify``'s verdict. ``valid`` is True only when ``code`` is ``valid``.

    ``code``: one of ``VerifyCode``, or a code a newer keyhouse adds; every code
    but ``valid`` is a refusal (never an error of the client). ``reason``: the
    sentence naming what failed, on the refusals of restricted keys
    (``insufficient_scope``, ``ip_not_allowed``, ...). ``scopes`` and
    ``restrictions``: the key's, when it has them (None: unrestricted).

    The key's details (``key_id``, ``account_id``, ``key_type``, ``name``,
    ``environment_id`` when scoped, ``expires_at`` when it expires) are given
    when the key exists; ``ratelimit`` when the plan has a rate limit;
    ``usage`` for a key that exists and is in force. ``tracking_id``: keyhouse's
    id of the answer (its ``X-Tracking-Id`` header), for matching logs; not
    compared.
    """

    valid: bool
    code: VerifyCode | str
    key_id: str | None = None
    account_id: str | None = None
    environment_id: str | None = None
    key_type: KeyType | None = None
    name: str | None = None
    expires_at: datetime | None = None
    ratelimit: RateLimitInfo | None = None
    usage: UsageInfo | None = None
    reason: str | None = None
    scopes: tuple[str, ...] | None = None
    restrictions: KeyRestrictions | None = None
    tracking_id: str | None = field(default=None, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifyResult:
        valid = data["valid"]
        if not isinstance(valid, bool):
            raise TypeError("valid is not a boolean")
        code = _str(data, "code")
        # A code this client does not know is a refusal a newer keyhouse added
        # (issue 15 added five): failing closed, never an unexpected_response.
        valid = valid and code == "valid"
        rate = data.get("ratelimit")
        usage = data.get("usage")
        key_type = data.get("keyType")
        return cls(
            valid=valid,
            code=code,
            key_id=_str_or_none(data, "keyId"),
            account_id=_str_or_none(data, "accountId"),
            environment_id=_str_or_none(data, "environmentId"),
            key_type=None if key_type is None else _key_type(key_type),
            name=_str_or_none(data, "name"),
            expires_at=_time_or_none(data.get("expiresAt")),
            ratelimit=None
            if rate is None
            else RateLimitInfo(_int(rate, "limit"), _int(rate, "remaining"), _int(rate, "reset")),
            usage=None
            if usage is None
            else UsageInfo(
                requests=_int(usage, "requests"),
                resets_at=parse_time(_str(usage, "resetsAt")),
                limit=_int_or_none(usage, "limit"),
            ),
            reason=_str_or_none(data, "reason"),
            scopes=_scopes_or_none(data),
            restrictions=KeyRestrictions.from_json(data.get("restrictions")),
        )
