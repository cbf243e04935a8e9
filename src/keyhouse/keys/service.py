"""API keys: issue, list, show, revoke, and authenticate with one.

Invariant: a key string exists in plaintext only in memory, on its way in
(a Bearer header) or out (a response the caller asked for). The database
holds its SHA-256 and its AES-GCM ciphertext. Nothing here logs or raises
with a key string in it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

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
from keyhouse.keys.restrictions import (
    Restrictions,
    escalation,
    parse_restrictions,
    parse_scopes,
)
from keyhouse.keys.schemas import DEFAULT_ROLL_GRACE_SECONDS, MAX_ROLL_GRACE_SECONDS
from keyhouse.keys.verify import Caller
from keyhouse.models import ApiKey
from keyhouse.runtime import Runtime
from keyhouse.scopes.service import catalog_names
from keyhouse.timeutil import format_ts, utcnow

__all__ = ["UNCHANGED", "Caller", "IssuedKey", "KeyService"]

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


class _Unchanged:
    def __repr__(self) -> str:
        return "UNCHANGED"


# ``update``'s default: the member was not sent (None is a value there: unrestricted).
UNCHANGED: Final = _Unchanged()

Grant = tuple[tuple[str, ...] | None, Restrictions | None]


def _restricted(caller: Caller | None) -> bool:
    """Whether ``caller`` is a key with scopes or restrictions (None: the operator, the CLI)."""
    return caller is not None and (caller.scopes is not None or caller.restrictions is not None)


def _grant_of(row: ApiKey) -> Grant:
    """What a stored key may do: its scopes and restrictions as values."""
    scopes = None if row.scopes is None else tuple(row.scopes)
    return scopes, Restrictions.from_json(row.restrictions)


def _grant_json(grant: Grant) -> dict[str, Any]:
    """A grant as the audit log's ``before``/``after`` shows it (null: none)."""
    scopes, restrictions = grant
    return {
        "scopes": None if scopes is None else list(scopes),
        "restrictions": None if restrictions is None else restrictions.to_json(),
    }


def _set_grant(row: ApiKey, grant: Grant) -> None:
    scopes, restrictions = grant
    row.scopes = None if scopes is None else list(scopes)
    row.restrictions = None if restrictions is None else restrictions.to_json()


def _unrestricted_account_key(caller: Caller) -> bool:
    return caller.environment_id is None and not _restricted(caller)


def _check_no_escalation(child: Grant, caller: Caller | None) -> None:
    """403 scope_escalation when a restricted ``caller`` would make a key wider than itself."""
    if not _restricted(caller):
        return
    assert caller is not None
    wider = escalation(child[0], child[1], caller.scopes, caller.restrictions)
    if wider is not None:
        raise errors.ScopeEscalation(wider)


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
        scopes: Sequence[str] | None = None,
        restrictions: Mapping[str, Any] | None = None,
        caller: Caller | None = None,
        actor: Actor,
        check_limit: bool = True,
    ) -> IssuedKey:
        """Issue a key. ``caller`` (None for the operator or the CLI) limits the scope.

        ``scopes`` and ``restrictions`` (the API's shapes; None: not given) are
        validated against the catalog (400). A restricted ``caller`` gives its
        own to a key for which they are not given, as an environment-scoped
        caller gives its environment, and may not make a key wider than itself
        (403 scope_escalation).

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
        grant = await self._parse_grant(key_type, scopes, restrictions)
        if caller is not None and _restricted(caller):
            grant = (
                caller.scopes if scopes is None else grant[0],
                caller.restrictions if restrictions is None else grant[1],
            )
            _check_no_escalation(grant, caller)
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
            grant=grant,
        )
        self._record("key.created", issued.row, actor)
        return issued

    async def _parse_grant(
        self,
        key_type: KeyType | str,
        scopes: Sequence[str] | None,
        restrictions: Mapping[str, Any] | None,
    ) -> Grant:
        """``scopes`` and ``restrictions`` as given, validated (400 naming what is wrong).

        The catalog is read only when one of them is given: an unrestricted key
        costs no query.
        """
        if scopes is None and restrictions is None:
            return None, None
        scope_names, attribute_names = await self._catalog()
        parsed_scopes = None if scopes is None else parse_scopes(scopes, scope_names)
        parsed = (
            None
            if restrictions is None
            else parse_restrictions(
                restrictions, key_type=key_type, attribute_catalog=attribute_names
            )
        )
        return parsed_scopes, parsed

    async def _catalog(self) -> tuple[Collection[str], Collection[str]]:
        """The platform's declared scope and attribute names (``PUT /admin/scopes``),
        its lock held shared until the transaction ends (``catalog_names``): taken
        before the account's row lock, in every change, so the order is one."""
        return await catalog_names(self.session)

    async def import_key(
        self,
        account_id: str,
        key: str,
        *,
        name: str,
        key_type: KeyType,
        environment_id: str | None = None,
        scopes: Sequence[str] | None = None,
        restrictions: Mapping[str, Any] | None = None,
        actor: Actor,
    ) -> IssuedKey:
        """Store an existing key from another system, hashed and encrypted, with
        ``scopes`` and ``restrictions`` as ``create`` validates them (the operator's
        call: no escalation to check).

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
        grant = await self._parse_grant(key_type, scopes, restrictions)
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
            grant=grant,
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
        grant: Grant = (None, None),
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
        _set_grant(row, grant)
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
        viewer: Caller | None,
    ) -> list[dict[str, Any]]:
        """The account's key objects, newest first (``GET /keys``).

        A scoped caller sees only its environment. ``reveal`` None: as
        ``keys.presenter`` decides for existing keys; ``viewer`` (the calling
        key, None for the operator) as ``keys.presenter.key_objects`` takes it.
        """
        if scope_environment_id is not None:
            if environment_id is not None and environment_id != scope_environment_id:
                return []
            environment_id = scope_environment_id
        rows = await self.repo.list(
            account_id, environment_id=environment_id, key_type=key_type, revoked=revoked
        )
        return key_objects(self.runtime, account_id, rows, reveal=reveal, viewer=viewer)

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
        return await self.update(
            account_id, key_id, name=name, scope_environment_id=scope_environment_id, actor=actor
        )

    async def update(
        self,
        account_id: str | None,
        key_id: str,
        *,
        name: str | None = None,
        scopes: Sequence[str] | _Unchanged | None = UNCHANGED,
        restrictions: Mapping[str, Any] | _Unchanged | None = UNCHANGED,
        scope_environment_id: str | None = None,
        caller: Caller | None = None,
        actor: Actor,
    ) -> ApiKey:
        """Rename a key and/or replace its scopes and restrictions (``PATCH /keys/{id}``).

        ``scopes`` None makes the key unrestricted; ``restrictions`` None or
        ``{}`` removes them; ``UNCHANGED`` leaves them. Narrowing (the key can
        do no more than before) is open to any caller that may write keys;
        widening needs the operator (``caller`` None) or an unrestricted
        account-wide secret key (403 scope_escalation otherwise), as an
        environment-scoped or restricted key could otherwise give a key more
        than it has. Recorded as ``key.updated`` with ``before`` and ``after``,
        and every process's cache is told (the key's NOTIFY), as for a revoke.
        """
        row = await self.get(account_id, key_id, scope_environment_id=scope_environment_id)
        regrant = not (isinstance(scopes, _Unchanged) and isinstance(restrictions, _Unchanged))
        given: Grant = (None, None)
        if regrant:
            # Validated before the lock: the catalog's lock comes before the
            # account's, as in create, and the key's type does not change.
            given = await self._parse_grant(
                row.key_type,
                None if isinstance(scopes, _Unchanged) else scopes,
                None if isinstance(restrictions, _Unchanged) else restrictions,
            )
        if (name is not None and row.name != name) or regrant:
            # Under the lock: two renames at once both recorded the same
            # previousName, and the audit log lost the name in between; two
            # updates of scopes would each record a `before` the other replaced.
            row = await self._locked(row)
        if regrant:
            self._regrant(
                row,
                given[0] if not isinstance(scopes, _Unchanged) else scopes,
                given[1] if not isinstance(restrictions, _Unchanged) else restrictions,
                caller,
                actor,
            )
        if name is not None and row.name != name:
            previous, row.name = row.name, name
            self._record("key.renamed", row, actor, {"previousName": previous})
        await self.repo.flush()
        return row

    def _regrant(
        self,
        row: ApiKey,
        scopes: tuple[str, ...] | _Unchanged | None,
        restrictions: Restrictions | _Unchanged | None,
        caller: Caller | None,
        actor: Actor,
    ) -> None:
        """Give ``row`` the validated ``scopes`` and ``restrictions`` (``UNCHANGED``: its
        own), if that changes it, under the rule of ``update``."""
        before = _grant_of(row)
        after = (
            before[0] if isinstance(scopes, _Unchanged) else scopes,
            before[1] if isinstance(restrictions, _Unchanged) else restrictions,
        )
        if _grant_json(after) == _grant_json(before):
            return
        wider = escalation(after[0], after[1], before[0], before[1])
        if wider is not None and caller is not None and not _unrestricted_account_key(caller):
            raise errors.ScopeEscalation(
                "Widening a key's scopes or restrictions (or removing them) needs an "
                "unrestricted account-wide secret key or the operator.",
                fix="Narrow the key only (fewer scopes, tighter restrictions), or send this "
                "change with an account-wide secret key that has no scopes or restrictions.",
            )
        _set_grant(row, after)
        self._record(
            "key.updated", row, actor, {"before": _grant_json(before), "after": _grant_json(after)}
        )

    async def roll(
        self,
        account_id: str | None,
        key_id: str,
        *,
        grace_seconds: int = DEFAULT_ROLL_GRACE_SECONDS,
        scope_environment_id: str | None = None,
        caller: Caller | None = None,
        actor: Actor,
    ) -> IssuedKey:
        """Replace a key: a new key with the same name, type, environment, scopes,
        restrictions and expiry. A restricted ``caller`` may roll only a key within
        its own scopes and restrictions (403 scope_escalation): the new key would be
        one it made.

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
        grant = _grant_of(row)
        _check_no_escalation(grant, caller)
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
            grant=grant,
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
