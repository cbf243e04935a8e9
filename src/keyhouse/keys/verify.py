"""The one verification path: a key string in, a verdict out.

Used to authenticate account-API requests (``authenticate`` raises the 401
that says why) and by ``POST /verify`` (``verify_key``: the verdict with the
plan's limits, as JSON).
Order: checksum of a native key (typos and garbage never reach the
database), SHA-256, the in-process cache by hash, the database on a miss,
then the key's state, with expiry checked against the clock on every use.

It reads on a connection of its own, and records a key's expiry in a
session of its own, before the request's session touches the database:
on SQLite a write inside a request that already holds the write lock would
wait on itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import update

from keyhouse import errors
from keyhouse.accounts.repository import AccountRepository
from keyhouse.audit.service import Actor, AuditService
from keyhouse.keys import changes
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.format import MAX_KEY_LENGTH, KeyType, Kind
from keyhouse.keys.record import KeyRecord
from keyhouse.keys.repository import find_record
from keyhouse.keys.restrictions import (
    Restrictions,
    attribute_refusal,
    ip_allowed,
    missing_scopes,
    origin_allowed,
    shown_address,
)
from keyhouse.limits.plan import Plan
from keyhouse.limits.service import usage_object
from keyhouse.logs import get_logger
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = [
    "NO_REQUIREMENTS",
    "Caller",
    "KeyRecord",
    "Requirements",
    "Verdict",
    "Verifier",
    "bearer_of",
    "refusal",
    "verify_key",
]

log = get_logger("keyhouse.verify")

# A longer Authorization header is refused before any lookup.
MAX_AUTHORIZATION_LENGTH = 1024


def bearer_of(header: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header, or the 401 that says why not."""
    if header is None:
        raise errors.MissingApiKey()
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise errors.MissingApiKey(
            "The Authorization header does not use the Bearer scheme.",
            fix="Send the header 'Authorization: Bearer <key>'.",
        )
    if len(header) > MAX_AUTHORIZATION_LENGTH:
        raise errors.InvalidApiKey()
    return token


Code = Literal["valid", "malformed", "not_found", "revoked", "expired"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the account API: the key that authenticated."""

    account_id: str
    key_id: str
    key_type: KeyType
    environment_id: str | None
    plan: Plan
    # Issue 15: the key's scopes and restrictions (None: unrestricted) and
    # its account's refuseSecretKeysFromBrowsers, from the cached record.
    scopes: tuple[str, ...] | None = None
    restrictions: Restrictions | None = None
    refuse_browsers: bool = False

    @property
    def is_secret(self) -> bool:
        return self.key_type == "secret"


@dataclass(frozen=True, slots=True)
class Verdict:
    code: Code
    record: KeyRecord | None = None

    @property
    def valid(self) -> bool:
        return self.code == "valid"


class Verifier:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def verify(
        self, key: str, *, now: datetime | None = None, actor: Actor | None = None
    ) -> Verdict:
        """The verdict on a key string.

        A valid verdict does not record the use for ``lastUsedAt``: the caller
        does (``mark_used``) once the use passed the key's scopes and
        restrictions too, so a refused use (``ip_not_allowed``,
        ``insufficient_scope``, ...) does not show as the key's last use
        (review r15)."""
        if not key or len(key) > MAX_KEY_LENGTH:
            return Verdict("not_found")
        runtime = self.runtime
        if runtime.key_format.parse(key).kind is Kind.MALFORMED:
            return Verdict("malformed")
        try:
            key_hash = hash_key(key)
        except UnicodeEncodeError:  # a lone surrogate (JSON's "\ud800"): no key has one
            return Verdict("not_found")
        hit, record = runtime.cache.get(key_hash)
        if not hit:
            epoch = runtime.cache.epoch
            # One statement on a connection of its own: no transaction, no ORM
            # session, retried once on a connection the server had dropped.
            record = await runtime.db.read(lambda connection: find_record(connection, key_hash))
            runtime.cache.put(key_hash, record, epoch)
        if record is None:
            return Verdict("not_found")
        if record.revoked:
            return Verdict("revoked", record)
        now = now or utcnow()
        # Checked against the clock on every use, never cached.
        if record.expires_at is not None and record.expires_at <= now:
            if not record.expiry_recorded:
                await self._record_expiry(record, key_hash, actor)
            return Verdict("expired", record)
        return Verdict("valid", record)

    def mark_used(self, key_id: str) -> None:
        """Record a use that passed, for ``lastUsedAt`` (written behind: ``LastUsed``)."""
        self.runtime.last_used.touch(key_id, utcnow())

    async def authenticate(self, key: str, *, actor: Actor | None = None) -> Caller:
        """The caller a key string stands for, or the 401 that says why not."""
        verdict = await self.verify(key, actor=actor)
        record = verdict.record
        if verdict.code == "valid" and record is not None:
            return Caller(
                record.account_id,
                record.id,
                record.key_type,
                record.environment_id,
                record.plan,
                record.scopes,
                record.restrictions,
                record.refuse_browsers,
            )
        if verdict.code == "malformed":
            raise errors.MalformedApiKey()
        if verdict.code == "revoked":
            raise errors.RevokedApiKey()
        if verdict.code == "expired":
            raise errors.ExpiredApiKey()
        raise errors.InvalidApiKey()

    async def _record_expiry(self, record: KeyRecord, key_hash: bytes, actor: Actor | None) -> None:
        """``key.expired`` once per key, the first time a use finds it expired.

        The cached record (``expiry_recorded`` false) is dropped here and in
        every process, so the next use reads the row again.
        """
        by = Actor(
            "key", record.id, actor.ip if actor else None, actor.user_agent if actor else None
        )
        try:
            async with changes.session(self.runtime, write=True) as session:
                # The account's row first, as every key change takes it
                # (KeyService._locked): the event's foreign key locks that
                # row after the key's, and a revoke holding the account while
                # it waited for this key's row was a deadlock.
                await AccountRepository(session).get_for_update(record.account_id)
                changes.mark_changed(session, self.runtime, key_hash)
                result = await session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == record.id, ApiKey.expiry_recorded_at.is_(None))
                    .values(expiry_recorded_at=utcnow())
                )
                if getattr(result, "rowcount", 0) == 1:
                    AuditService(session).record(
                        "key.expired",
                        account_id=record.account_id,
                        actor=by,
                        key_id=record.id,
                        environment_id=record.environment_id,
                    )
        except Exception as exc:
            # The answer (401 expired) stands; the event is retried on the next use.
            log.warning("expiry_event_not_recorded", key_id=record.id, error=type(exc).__name__)


@dataclass(frozen=True, slots=True)
class Requirements:
    """What ``POST /verify`` asks of a key besides being valid: scopes it needs, and
    the request's address, origin and attributes to check its restrictions against."""

    scopes: Sequence[str] = ()
    ip: str | None = None
    origin: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)


NO_REQUIREMENTS = Requirements()


def refusal(record: KeyRecord, asked: Requirements) -> tuple[str, str] | None:
    """``(code, reason)`` when the key's scopes or restrictions refuse ``asked``, else None.

    In this order: the account's browser guard (a secret key given with an
    ``origin``), the key's IP allowlist, its allowed origins (each fails
    closed: a key with the restriction, verified without the value, is
    refused), the scopes asked for, then its attributes. Reasons name what
    failed; they repeat no value of the request but an IP address (checked
    to be one by the request's schema; without its zone id, if it has one:
    ``shown_address``) and scope names.
    """
    if asked.origin is not None and record.refuse_browsers and record.key_type == "secret":
        return (
            "secret_key_in_browser",
            "An origin was given for a secret key, and the key's account refuses secret "
            "keys from browsers.",
        )
    restrictions = record.restrictions
    if restrictions is not None:
        if not ip_allowed(restrictions, asked.ip):
            if asked.ip is None:
                return "ip_not_allowed", "The key has an ipAllowlist and no ip was given."
            return "ip_not_allowed", f"{shown_address(asked.ip)} is not in the key's ipAllowlist."
        if not origin_allowed(restrictions, asked.origin):
            if asked.origin is None:
                return "origin_not_allowed", "The key has allowedOrigins and no origin was given."
            return "origin_not_allowed", "The origin is not in the key's allowedOrigins."
    if asked.scopes:
        missing = missing_scopes(record.scopes, asked.scopes)
        if missing:
            return "insufficient_scope", f"The key's scopes do not grant {', '.join(missing)}."
    name = attribute_refusal(restrictions, asked.attributes)
    if name is not None:
        if name not in asked.attributes:
            return "attribute_not_allowed", f"The key restricts {name} and no {name} was given."
        return "attribute_not_allowed", f"The {name} given is not one of the key's values."
    return None


async def verify_key(
    runtime: Runtime,
    key: str,
    actor: Actor | None,
    asked: Requirements = NO_REQUIREMENTS,
) -> dict[str, Any]:
    """``POST /verify``'s verdict as a JSON-ready dict: ``verify`` plus the plan's limits.

    A valid key is then held to its scopes and restrictions (``refusal``): a
    refused one is ``valid: false`` with the refusal's ``code`` and ``reason``,
    before metering, so it consumes no quota and no rate token. A key that
    passes counts against its account's plan, like an API call: a refused one
    turns the verdict into ``usage_exceeded`` or ``rate_limited``.
    """
    verdict = await Verifier(runtime).verify(key, actor=actor)
    out: dict[str, Any] = {"valid": verdict.valid, "code": verdict.code}
    record = verdict.record
    extra: dict[str, Any] = {}
    if verdict.valid and record is not None:
        refused = None
        # An unrestricted key of an account without the browser guard: three
        # attribute reads, no call.
        if (
            record.scopes is not None
            or record.restrictions is not None
            or (record.refuse_browsers and asked.origin is not None)
        ):
            refused = refusal(record, asked)
        if refused is not None:
            out = {"valid": False, "code": refused[0], "reason": refused[1]}
        else:
            # Passed its scopes and restrictions: a use, whatever the plan's
            # limits answer next (as on the account API, where they come after).
            runtime.last_used.touch(record.id, utcnow())
            # A verification counts against the account's plan, like an API call.
            admission = await runtime.limiter.admit(
                record.account_id, record.id, record.plan, utcnow()
            )
            if not admission.allowed:
                code = "usage_exceeded" if admission.refusal == "usage" else "rate_limited"
                out = {"valid": False, "code": code}
            if admission.rate is not None:
                rate = admission.rate
                extra["ratelimit"] = {
                    "limit": rate.limit,
                    "remaining": rate.remaining,
                    "reset": rate.reset,
                }
            extra["usage"] = usage_object(
                admission.used, admission.period, limit=record.plan.monthly_requests
            )
    if record is not None:
        out["keyId"] = record.id
        out["accountId"] = record.account_id
        if record.environment_id is not None:
            out["environmentId"] = record.environment_id
        out["keyType"] = record.key_type
        out["name"] = record.name
        if record.expires_at is not None:
            out["expiresAt"] = format_ts(record.expires_at)
        if record.scopes is not None:
            out["scopes"] = list(record.scopes)
        if record.restrictions is not None:
            out["restrictions"] = record.restrictions.to_json()
    out.update(extra)
    return out
