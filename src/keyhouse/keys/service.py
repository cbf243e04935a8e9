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

from sqlalchemy.ext.asyncio import AsyncSession

from keyhouse import errors
from keyhouse.environments.repository import EnvironmentRepository
from keyhouse.ids import new_id
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.format import Kind
from keyhouse.keys.repository import KeyRepository
from keyhouse.keys.schemas import KeyType
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["MAX_KEY_LENGTH", "Caller", "IssuedKey", "KeyService"]

# No key we issue or import is longer; a longer string is not looked up.
MAX_KEY_LENGTH = 200
# A key that expires within this horizon does not count as the account's
# remaining way in when the last-key guard decides.
LAST_KEY_HORIZON = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling the account API: the key that authenticated."""

    account_id: str
    key_id: str
    key_type: KeyType
    environment_id: str | None

    @property
    def is_secret(self) -> bool:
        return self.key_type == "secret"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    row: ApiKey
    plaintext: str


class KeyService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = KeyRepository(session)
        self.environments = EnvironmentRepository(session)

    # -- authentication -----------------------------------------------------

    async def authenticate(self, key: str, *, now: datetime | None = None) -> Caller:
        """The caller a key string stands for, or the 401 that says why not.

        Order (DESIGN §2): checksum of a native key (no database access for
        typos and garbage), then lookup by SHA-256, then the key's state.
        """
        if not key or len(key) > MAX_KEY_LENGTH:
            raise errors.InvalidApiKey()
        parsed = self.runtime.key_format.parse(key)
        if parsed.kind is Kind.MALFORMED:
            raise errors.MalformedApiKey()
        row = await self.repo.get_by_hash(hash_key(key))
        if row is None:
            raise errors.InvalidApiKey()
        if row.revoked:
            raise errors.RevokedApiKey()
        # Checked against the clock on every use, never cached.
        if row.expires_at is not None and row.expires_at <= (now or utcnow()):
            raise errors.ExpiredApiKey()
        key_type: KeyType = "secret" if row.key_type == "secret" else "public"
        return Caller(row.account_id, row.id, key_type, row.environment_id)

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
    ) -> IssuedKey:
        """Issue a key. ``caller`` (None for the operator or the CLI) limits the scope."""
        if caller is not None and caller.environment_id is not None:
            if environment_id is None:
                environment_id = caller.environment_id
            elif environment_id != caller.environment_id:
                raise errors.Forbidden(
                    "An environment-scoped key can only create keys in its own environment.",
                    fix="Omit environmentId, or use an account-wide secret key.",
                )
        if environment_id is not None:
            env = await self.environments.get(account_id, environment_id)
            if env is None:
                raise errors.NotFound(
                    f"Environment {environment_id!r} was not found.",
                    fix="List environments with GET /environments and use one of their ids.",
                )
        now = utcnow()
        if expires_at is not None and expires_at <= now:
            raise errors.BadRequest(
                "expiresAt must be in the future.",
                fix="Send an ISO 8601 time with a time zone that is later than now.",
            )
        plaintext = self.runtime.key_format.generate(key_type)
        return await self._store(
            account_id,
            plaintext,
            name=name,
            key_type=key_type,
            environment_id=environment_id,
            expires_at=expires_at,
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
        )
        self.repo.add(row)
        await self.repo.flush()
        return IssuedKey(row, plaintext)

    async def list_keys(
        self,
        account_id: str,
        *,
        scope_environment_id: str | None = None,
        environment_id: str | None = None,
        key_type: KeyType | None = None,
        revoked: bool | None = None,
    ) -> list[ApiKey]:
        """The account's keys, newest first; a scoped caller sees only its environment."""
        if scope_environment_id is not None:
            if environment_id is not None and environment_id != scope_environment_id:
                return []
            environment_id = scope_environment_id
        return list(
            await self.repo.list(
                account_id, environment_id=environment_id, key_type=key_type, revoked=revoked
            )
        )

    async def get(
        self, account_id: str | None, key_id: str, *, scope_environment_id: str | None = None
    ) -> ApiKey:
        """One key; another account's or environment's key is simply not found.

        ``account_id`` None is the operator's view (the CLI): any account.
        """
        row = await self.repo.get(account_id, key_id, environment_id=scope_environment_id)
        if row is None:
            raise errors.NotFound(
                f"Key {key_id!r} was not found.",
                fix="List your keys with GET /keys and use one of their ids.",
            )
        return row

    async def revoke(
        self,
        account_id: str | None,
        key_id: str,
        *,
        scope_environment_id: str | None = None,
        force: bool = False,
    ) -> ApiKey:
        """Revoke a key; revoking a revoked key changes nothing and succeeds.

        Refuses (409 last_secret_key) to revoke the account's last active
        account-wide secret key unless ``force``: that would lock the
        account out of its own API. Active: not revoked, and not expiring
        within the next hour.
        """
        row = await self.get(account_id, key_id, scope_environment_id=scope_environment_id)
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
        await self.repo.flush()
        return row

    # -- presentation ---------------------------------------------------------

    def reveal(self, row: ApiKey) -> str:
        return self.runtime.keyring.decrypt(row.enc_kid, row.key_ciphertext, associated=row.id)

    def to_object(self, row: ApiKey, *, reveal: bool = True) -> dict[str, Any]:
        """The seed's key object; optional members are left out, never null."""
        revealed = reveal or row.key_type == "public"
        key = self.reveal(row) if revealed else row.key_hint
        obj: dict[str, Any] = {
            "id": row.id,
            "key": key,
            "keyType": row.key_type,
        }
        if row.environment_id is not None:
            obj["environmentId"] = row.environment_id
        obj["accountId"] = row.account_id
        obj["name"] = row.name
        obj["revoked"] = row.revoked
        obj["createdAt"] = format_ts(row.created_at)
        if row.last_used_at is not None:
            obj["lastUsedAt"] = format_ts(row.last_used_at)
        if row.expires_at is not None:
            obj["expiresAt"] = format_ts(row.expires_at)
        return obj

    def to_objects(self, rows: list[ApiKey], *, reveal: bool) -> list[dict[str, Any]]:
        return [self.to_object(row, reveal=reveal) for row in rows]
