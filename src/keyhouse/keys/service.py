"""API keys: issue, list, show, revoke, and authenticate with one.

Invariant: a key string exists in plaintext only in memory, on its way in
(a Bearer header) or out (a response the caller asked for). The database
holds its SHA-256 and its AES-GCM ciphertext. Nothing here logs or raises
with a key string in it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from keyhouse import errors
from keyhouse.accounts.repository import AccountRepository
from keyhouse.audit.service import Actor, AuditService
from keyhouse.db.session import DbSession
from keyhouse.environments.repository import EnvironmentRepository
from keyhouse.ids import new_id
from keyhouse.keys.changes import mark_changed
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH, MAX_KEY_LENGTH, KeyType, Kind
from keyhouse.keys.presenter import key_objects
from keyhouse.keys.repository import KeyRepository
from keyhouse.keys.schemas import DEFAULT_ROLL_GRACE_SECONDS, MAX_ROLL_GRACE_SECONDS
from keyhouse.keys.verify import Caller
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["Caller", "IssuedKey", "KeyService"]

# A key that expires within this horizon does not count as the account's
# remaining way in when the last-key guard decides.
LAST_KEY_HORIZON = timedelta(hours=1)


def _already_stored() -> errors.Conflict:
    return errors.Conflict(
        "This key is already stored.",
        fix="List the account's keys; an identical key cannot be imported twice.",
    )


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKey
    plaintext: str


class KeyService:
    def __init__(self, session: DbSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.session = session
        self.repo = KeyRepository(session)
        self.environments = EnvironmentRepository(session)
        self.audit = AuditService(session)
        self.accounts = AccountRepository(session)

    # -- management -----------------------------------------------------------

    async def create(
        self,
        account_id: str,
        *,
        name: str,
        key_type: KeyType,
        environment_id: str | None = None,
        expires_at: datetime | None = None,
        caller: Caller | None = None,
        actor: Actor,
        check_limit: bool = True,
    ) -> IssuedKey:
        """Issue a key. ``caller`` (None for the operator or the CLI) limits the scope.

        ``check_limit`` False is for an account's first key, made with the account.
        An unknown account is 404 not_found.
        """
        if caller is None:
            # A caller's account exists (its key was just verified): the check
            # is for the operator and the CLI, and costs POST /keys nothing.
            await self._check_account(account_id)
        if caller is not None and caller.environment_id is not None:
            if environment_id is None:
                environment_id = caller.environment_id
            elif environment_id != caller.environment_id:
                raise errors.Forbidden(
                    "An environment-scoped key can only create keys in its own environment.",
                    fix="Omit environmentId, or use an account-wide secret key.",
                )
        await self._check_environment(account_id, environment_id)
        if expires_at is not None and expires_at <= utcnow():
            raise errors.BadRequest(
                "expiresAt must be in the future.",
                fix="Send an ISO 8601 time with a time zone that is later than now.",
            )
        if check_limit:
            await self._check_key_limit(account_id, utcnow())
        plaintext = self.runtime.key_format.generate(key_type)
        issued = await self._store(
            account_id,
            plaintext,
            name=name,
            key_type=key_type,
            environment_id=environment_id,
            expires_at=expires_at,
        )
        self._record("key.created", issued.row, actor)
        return issued

    async def import_key(
        self,
        account_id: str,
        key: str,
        *,
        name: str,
        key_type: KeyType,
        environment_id: str | None = None,
        actor: Actor,
    ) -> IssuedKey:
        """Store an existing key from another system, hashed and encrypted.

        A string in our own format whose checksum fails would be refused as
        malformed before any lookup, so it cannot be imported. An unknown
        account is 404 not_found, before the key is looked at.
        """
        await self._check_account(account_id)
        if not IMPORTED_KEY_MIN_LENGTH <= len(key) <= MAX_KEY_LENGTH:
            raise errors.BadRequest(
                f"An imported key is {IMPORTED_KEY_MIN_LENGTH} to {MAX_KEY_LENGTH} characters.",
                fix="Check the key you are importing.",
            )
        if self.runtime.key_format.parse(key).kind is Kind.MALFORMED:
            raise errors.BadRequest(
                "The key has a keyhouse prefix but its checksum does not match.",
                fix="Import the key exactly as issued, or use another prefix.",
            )
        self._check_prefix_matches(key, key_type)
        await self._check_environment(account_id, environment_id)
        if await self.repo.get_by_hash(hash_key(key)) is not None:
            raise _already_stored()
        await self._check_key_limit(account_id, utcnow())
        issued = await self._store(
            account_id,
            key,
            name=name,
            key_type=key_type,
            environment_id=environment_id,
            expires_at=None,
            imported=True,
        )
        self._record("key.imported", issued.row, actor)
        return issued

    def _check_prefix_matches(self, key: str, key_type: KeyType) -> None:
        """400 when a key with one of our type prefixes is imported as the other type.

        The prefix is what people, secret scanners and ``KeyFormat.mask`` go by:
        a ``pk_`` key stored as secret would manage the account from client-side
        code where ``pk_`` keys are meant to live, and an ``sk_`` key stored as
        public would be a secret-looking key with no power. Keys without one of
        our prefixes are not judged by their look.
        """
        for prefix_type, prefix in self.runtime.key_format.prefixes.items():
            if key.startswith(prefix) and prefix_type != key_type:
                raise errors.BadRequest(
                    f"The key starts with {prefix!r}, keyhouse's prefix of {prefix_type} "
                    f"keys, so it cannot be imported as a {key_type} key.",
                    fix=f'Import it with "keyType": "{prefix_type}".',
                )

    async def _check_key_limit(self, account_id: str, now: datetime) -> None:
        """402 key_limit_reached when one more active key would exceed maxKeys.

        Counted in the database under the account's row lock: exact under
        concurrency, on every engine and across processes.
        """
        account = await self.accounts.get_for_update(account_id)
        if account is None or account.max_keys is None:
            return
        active = await self.repo.count_active(account_id, at=now)
        if active >= account.max_keys:
            raise errors.KeyLimitReached(
                f"The account's plan allows {account.max_keys} active keys.",
                fix=(
                    f"{active} of {account.max_keys} keys are active. Revoke one you no longer "
                    "use (POST /keys/{id}/revoke), or ask the operator to raise maxKeys."
                ),
            )

    async def _locked(self, row: ApiKey) -> ApiKey:
        """``row`` read again under its account's row lock, held until the transaction ends.

        Every change of a key's state takes this lock before it reads the
        state it decides on, so changes of one account's keys (and the
        ``maxKeys`` count) happen one after the other on every engine: on
        PostgreSQL two requests would otherwise both read, then both write.
        Always the account first, then the key: the same order everywhere
        cannot deadlock. SQLite's write transactions are serialised already.
        """
        await self.accounts.get_for_update(row.account_id)
        return await self.repo.reload(row)

    async def _check_account(self, account_id: str) -> None:
        if await self.accounts.get(account_id) is None:
            raise errors.AccountNotFound()

    async def _check_environment(self, account_id: str, environment_id: str | None) -> None:
        if environment_id is None:
            return
        if await self.environments.get(account_id, environment_id) is None:
            raise errors.NotFound(
                "The environment was not found.",
                fix="List environments with GET /environments and use one of their ids.",
            )

    def _record(
        self, type_: str, row: ApiKey, actor: Actor, data: dict[str, Any] | None = None
    ) -> None:
        mark_changed(self.session, self.runtime, row.key_hash)
        self.audit.record(
            type_,
            account_id=row.account_id,
            actor=actor,
            key_id=row.id,
            environment_id=row.environment_id,
            data=data,
        )

    async def _store(
        self,
        account_id: str,
        plaintext: str,
        *,
        name: str,
        key_type: KeyType,
        environment_id: str | None,
        expires_at: datetime | None,
        imported: bool = False,
    ) -> IssuedKey:
        key_id, created_at = new_id("key")
        sealed = self.runtime.keyring.encrypt(plaintext, associated=key_id)
        row = ApiKey(
            id=key_id,
            account_id=account_id,
            environment_id=environment_id,
            key_type=key_type,
            name=name,
            key_hash=hash_key(plaintext),
            key_ciphertext=sealed.ciphertext,
            enc_kid=sealed.kid,
            key_hint=self.runtime.key_format.mask(plaintext, key_type),
            revoked=False,
            expires_at=expires_at,
            created_at=created_at,
            imported=imported,
        )
        if not await self.repo.insert(row):
            raise _already_stored()
        return IssuedKey(row, plaintext)

    async def list_objects(
        self,
        account_id: str,
        *,
        scope_environment_id: str | None = None,
        environment_id: str | None = None,
        key_type: KeyType | None = None,
        revoked: bool | None = None,
        reveal: bool | None = None,
    ) -> list[dict[str, Any]]:
        """The account's key objects, newest first (``GET /keys``).

        A scoped caller sees only its environment. ``reveal`` None: as
        ``keys.presenter`` decides for existing keys.
        """
        if scope_environment_id is not None:
            if environment_id is not None and environment_id != scope_environment_id:
                return []
            environment_id = scope_environment_id
        rows = await self.repo.list(
            account_id, environment_id=environment_id, key_type=key_type, revoked=revoked
        )
        return key_objects(self.runtime, account_id, rows, reveal=reveal)

    async def get(
        self, account_id: str | None, key_id: str, *, scope_environment_id: str | None = None
    ) -> ApiKey:
        """One key; another account's or environment's key is simply not found.

        ``account_id`` None is the operator's view (the CLI): any account.
        """
        row = await self.repo.get(account_id, key_id, environment_id=scope_environment_id)
        if row is None:
            # The id is not echoed: a key pasted as an id would come back in the body.
            raise errors.NotFound(
                "The key was not found.",
                fix="List your keys with GET /keys and use one of their ids."
                if account_id is not None
                else "Check the key id (key_...); GET /admin/accounts/{id}/keys lists "
                "an account's keys.",
            )
        return row

    async def revoke(
        self,
        account_id: str | None,
        key_id: str,
        *,
        scope_environment_id: str | None = None,
        force: bool = False,
        actor: Actor,
    ) -> ApiKey:
        """Revoke a key; revoking a revoked key changes nothing and succeeds.

        Refuses (409 last_secret_key) to revoke the account's last active
        account-wide secret key unless ``force``: that would lock the
        account out of its own API. Active: not revoked, and not expiring
        within the next hour.
        """
        row = await self.get(account_id, key_id, scope_environment_id=scope_environment_id)
        if row.revoked:  # for good: no lock needed to know it
            return row
        # Two such revokes at once (A revokes B while B revokes A) would each
        # count the other as remaining and both pass: on PostgreSQL (READ
        # COMMITTED) 13 of 15 accounts were left with no secret key under
        # `serve --workers 2`; two revokes of one key both recorded it.
        row = await self._locked(row)
        if row.revoked:
            return row
        now = utcnow()
        if not force and row.key_type == "secret" and row.environment_id is None:
            others = await self.repo.count_active_account_secrets(
                row.account_id, active_after=now + LAST_KEY_HORIZON, excluding=row.id
            )
            if others == 0:
                raise errors.LastSecretKey()
        row.revoked = True
        row.revoked_at = now
        self._record("key.revoked", row, actor)
        await self.repo.flush()
        return row

    async def rename(
        self,
        account_id: str | None,
        key_id: str,
        name: str,
        *,
        scope_environment_id: str | None = None,
        actor: Actor,
    ) -> ApiKey:
        row = await self.get(account_id, key_id, scope_environment_id=scope_environment_id)
        if row.name != name:
            # Under the lock: two renames at once both recorded the same
            # previousName, and the audit log lost the name in between.
            row = await self._locked(row)
        if row.name != name:
            previous, row.name = row.name, name
            self._record("key.renamed", row, actor, {"previousName": previous})
            await self.repo.flush()
        return row

    async def roll(
        self,
        account_id: str | None,
        key_id: str,
        *,
        grace_seconds: int = DEFAULT_ROLL_GRACE_SECONDS,
        scope_environment_id: str | None = None,
        actor: Actor,
    ) -> IssuedKey:
        """Replace a key: a new key with the same name, type, scope and expiry.

        The old key keeps working for the grace period: its ``expiresAt``
        becomes the earlier of its own and now + grace, so a roll never
        extends a key's life (0 ends it at once).
        """
        if not 0 <= grace_seconds <= MAX_ROLL_GRACE_SECONDS:
            raise errors.BadRequest(
                f"expiresInSeconds is 0 to {MAX_ROLL_GRACE_SECONDS}.",
                fix=(
                    "Send a grace period in seconds between 0 and "
                    f"{MAX_ROLL_GRACE_SECONDS} (7 days)."
                ),
            )
        row = await self.get(account_id, key_id, scope_environment_id=scope_environment_id)
        # Under the lock, the key as committed: two rolls with grace 0 of one
        # key both made a replacement on PostgreSQL, and a roll went on with a
        # key revoked while it ran.
        row = await self._locked(row)
        now = utcnow()
        self._check_rollable(row, now)
        key_type: KeyType = "secret" if row.key_type == "secret" else "public"
        original_expiry = row.expires_at
        grace_end = now + timedelta(seconds=grace_seconds)
        if row.expires_at is None or grace_end < row.expires_at:
            row.expires_at = grace_end
        await self.repo.flush()
        # The old key counts as active while its grace lasts (0: it does not).
        try:
            await self._check_key_limit(row.account_id, now)
        except errors.KeyLimitReached:
            # A refused roll changes nothing, even for a caller that goes on
            # to commit the session: the old key keeps its expiry.
            row.expires_at = original_expiry
            await self.repo.flush()
            raise
        issued = await self._store(
            row.account_id,
            self.runtime.key_format.generate(key_type),
            name=row.name,
            key_type=key_type,
            environment_id=row.environment_id,
            expires_at=original_expiry,
        )
        row.rolled_to = issued.row.id
        self._record("key.created", issued.row, actor, {"rolledFrom": row.id})
        self._record(
            "key.rolled",
            row,
            actor,
            {"rolledTo": issued.row.id, "expiresAt": format_ts(row.expires_at)},
        )
        await self.repo.flush()
        return issued

    @staticmethod
    def _check_rollable(row: ApiKey, now: datetime) -> None:
        """409 for a key that is revoked, expired, or rolled already (in its grace period).

        A rolled key is known by ``rolled_to``, set by the roll in the same
        transaction as its ``key.rolled`` event. Rolling it again would make a
        replacement that inherits its shortened expiry and dies with it.
        """
        if row.revoked:
            raise errors.Conflict(
                "A revoked key cannot be rolled.", fix="Create a new key with POST /keys."
            )
        if row.expires_at is not None and row.expires_at <= now:
            raise errors.Conflict(
                "An expired key cannot be rolled.", fix="Create a new key with POST /keys."
            )
        if row.rolled_to is not None:
            raise errors.KeyAlreadyRolled(row.rolled_to)
