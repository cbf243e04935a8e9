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

from dataclasses import dataclass
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
from keyhouse.keys.restrictions import Restrictions
from keyhouse.limits.plan import Plan
from keyhouse.limits.service import usage_object
from keyhouse.logs import get_logger
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["Caller", "KeyRecord", "Verdict", "Verifier", "bearer_of", "verify_key"]

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
        """The verdict on a key string; a valid use is recorded for ``lastUsedAt``."""
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
        runtime.last_used.touch(record.id, now)
        return Verdict("valid", record)

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


async def verify_key(runtime: Runtime, key: str, actor: Actor | None) -> dict[str, Any]:
    """``POST /verify``'s verdict as a JSON-ready dict: ``verify`` plus the plan's limits.

    A valid key's use counts against its account's plan, like an API call: a
    refused one turns the verdict into ``usage_exceeded`` or ``rate_limited``.
    """
    verdict = await Verifier(runtime).verify(key, actor=actor)
    out: dict[str, Any] = {"valid": verdict.valid, "code": verdict.code}
    record = verdict.record
    extra: dict[str, Any] = {}
    if verdict.valid and record is not None:
        # A verification counts against the account's plan, like an API call.
        admission = await runtime.limiter.admit(record.account_id, record.id, record.plan, utcnow())
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
    out.update(extra)
    return out
