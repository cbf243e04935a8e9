"""The key object (the seed's ``GET /keys`` item): built here and only here.

One rule decides whether ``key`` carries the full key string:

* a key just issued (created, rolled, imported, or an account's first key)
  is always shown in full: it is the caller's one chance to copy it;
* a read of an existing key (list, get, revoke, rename) shows it in full
  unless the operator set ``KEYHOUSE_LIST_REVEALS_KEYS=false``; then secret
  keys are masked (``sk_…Ab12``) and public keys, which only verify, stay
  full;
* whatever that setting, a restricted caller (a key with ``scopes`` or
  ``restrictions``: the ``viewer``) sees an existing secret key in full only
  when that key is within its own power (``restrictions.escalation`` finds
  nothing wider, the same test that refuses it making a wider key). Review
  r15 found a ``keys:read`` key listing the account's unrestricted secret key,
  and a ``keys:write`` key reading it from a no-op PATCH: reading a wider key
  is the same escalation as creating one. A key it just issued is within its
  power by that rule already (create and roll refuse otherwise).

A key whose ciphertext cannot be decrypted (its encryption key is no
longer in ``KEYHOUSE_ENCRYPTION_KEYS``, or the ciphertext is damaged) is
shown masked, from its stored hint, with ``"recoverable": false``, and a
warning names its id and encryption key id. The member is there only then,
so every other key object stays exactly the seed's; so are ``scopes`` and
``restrictions``, there only for a key that has them. Nothing else about a key
needs its plaintext: revoking, rolling, renaming and verifying (by hash) work
the same for it.

Endpoints and the CLI call ``issued_key_object`` or ``key_object``/
``key_objects`` with the ``viewer`` (the calling key; None for the operator,
an admin token and the CLI); none of them passes the reveal flag itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from keyhouse.keys.repository import KeyView
from keyhouse.keys.restrictions import Restrictions, escalation
from keyhouse.logs import get_logger
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_stored_ts, format_ts

if TYPE_CHECKING:
    from keyhouse.keys.verify import Caller

__all__ = ["issued_key_object", "key_object", "key_objects", "reveals_existing_keys"]

log = get_logger("keyhouse.keys")

# Warnings of one listing about keys that cannot be decrypted: one line per key
# up to this many, then one line with the count. A listing of 10,000 keys under
# a lost encryption key would otherwise write 10,000 lines per request.
MAX_UNRECOVERABLE_WARNINGS = 20


def reveals_existing_keys(runtime: Runtime) -> bool:
    """Whether a read of an existing secret key shows its full string."""
    return runtime.settings.list_reveals_keys


def issued_key_object(runtime: Runtime, row: KeyView) -> dict[str, Any]:
    """A key just issued: always in full."""
    return _object(runtime, row, reveal=True)


def key_object(runtime: Runtime, row: KeyView, *, viewer: Caller | None) -> dict[str, Any]:
    """An existing key, revealed as the operator configured and ``viewer`` may see."""
    return _object(runtime, row, reveal=reveals_existing_keys(runtime), viewer=viewer)


def _restricted(viewer: Caller | None) -> bool:
    return viewer is not None and (viewer.scopes is not None or viewer.restrictions is not None)


def _within(viewer: Caller, scopes: Sequence[str] | None, restrictions: Any) -> bool:
    """Whether a key with ``scopes``/``restrictions`` (stored shapes) can do no
    more than ``viewer``: the rule that lets a restricted caller see it in full."""
    return (
        escalation(
            None if scopes is None else tuple(scopes),
            Restrictions.from_json(restrictions),
            viewer.scopes,
            viewer.restrictions,
        )
        is None
    )


def _object(
    runtime: Runtime, row: KeyView, *, reveal: bool, viewer: Caller | None = None
) -> dict[str, Any]:
    # One way to build a key object: the listing's, fed this row's columns.
    columns = (
        row.id,
        row.environment_id,
        row.key_type,
        row.name,
        row.key_ciphertext,
        row.enc_kid,
        row.key_hint,
        row.revoked,
        row.created_at,
        row.last_used_at,
        row.expires_at,
        row.scopes,
        row.restrictions,
    )
    return key_objects(runtime, row.account_id, [columns], reveal=reveal, viewer=viewer)[0]


def key_objects(
    runtime: Runtime,
    account_id: str,
    rows: Sequence[Sequence[Any]],
    *,
    viewer: Caller | None,
    reveal: bool | None = None,
) -> list[dict[str, Any]]:
    """Key objects of one account from rows in _VIEW_COLUMNS' order (keys/repository.py).

    ``reveal`` None: existing keys, as the operator configured; the CLI's
    table passes its ``--reveal`` choice. ``viewer``: the calling key (None:
    the operator); a restricted one sees in full only the secret keys within
    its own power (the module's rule). Optional members are left out, never
    null.

    The per-key work of a listing (10,000 keys: most of a request), as
    one loop with local names. The key strings are decrypted first, in
    one call (``Keyring.decrypt_each``); one that does not decrypt is shown
    masked with ``"recoverable": false``.
    """
    if reveal is None:
        reveal = reveals_existing_keys(runtime)
    # Unpacked by position in _VIEW_COLUMNS' order: reading a Row by
    # attribute name cost ~0.3 us a member, most of the per-key time.
    # Which rows are shown in full, decided here for every answer: public
    # keys always; secret keys when revealing, and for a restricted viewer
    # only those within its power (the escalation test runs only then).
    if reveal and _restricted(viewer):
        assert viewer is not None
        full = [row[2] == "public" or _within(viewer, row[11], row[12]) for row in rows]
    else:
        full = [reveal or row[2] == "public" for row in rows]
    plain = iter(
        runtime.keyring.decrypt_each(
            (row[5], row[4], row[0]) for row, shows in zip(rows, full, strict=True) if shows
        )
    )
    unrecoverable: list[tuple[str, str]] = []
    pending_of = runtime.last_used.pending_lookup()
    stamp = format_stored_ts
    out = []
    for shows, (
        key_id,
        environment_id,
        key_type,
        name,
        _ciphertext,
        enc_kid,
        key_hint,
        revoked,
        created_at,
        stored_last_used,
        expires_at,
        scopes,
        restrictions,
    ) in zip(full, rows, strict=True):
        shown = next(plain) if shows else key_hint
        obj: dict[str, Any] = {
            "id": key_id,
            "key": key_hint if shown is None else shown,
            "keyType": key_type,
        }
        if environment_id is not None:
            obj["environmentId"] = environment_id
        obj["accountId"] = account_id
        obj["name"] = name
        obj["revoked"] = bool(revoked)
        obj["createdAt"] = stamp(created_at)
        last_used = None if stored_last_used is None else stamp(stored_last_used)
        pending = pending_of(key_id)
        if pending is not None:
            pending_text = format_ts(pending)
            if last_used is None or pending_text > last_used:
                last_used = pending_text
        if last_used is not None:
            obj["lastUsedAt"] = last_used
        if expires_at is not None:
            obj["expiresAt"] = stamp(expires_at)
        # Only when set: an unrestricted key's object stays exactly the seed's.
        # Stored in the API's shape (restrictions.Restrictions.to_json).
        if scopes is not None:
            obj["scopes"] = scopes
        if restrictions is not None:
            obj["restrictions"] = restrictions
        if shown is None:
            obj["recoverable"] = False
            unrecoverable.append((key_id, enc_kid))
        out.append(obj)
    if unrecoverable:
        _warn_unrecoverable(runtime, account_id, unrecoverable)
    return out


def _warn_unrecoverable(runtime: Runtime, account_id: str, keys: list[tuple[str, str]]) -> None:
    """A warning per key shown masked because it does not decrypt (ids only, never a key)."""
    for key_id, enc_kid in keys[:MAX_UNRECOVERABLE_WARNINGS]:
        log.warning(
            "key_not_recoverable",
            key_id=key_id,
            account_id=account_id,
            enc_kid=enc_kid,
            reason=(
                "ciphertext_does_not_decrypt"
                if runtime.keyring.knows(enc_kid)
                else "encryption_key_not_configured"
            ),
            fix="keyhouse key reencrypt lists such keys; restore the encryption key "
            "in KEYHOUSE_ENCRYPTION_KEYS to show them again",
        )
    if len(keys) > MAX_UNRECOVERABLE_WARNINGS:
        log.warning(
            "keys_not_recoverable",
            account_id=account_id,
            count=len(keys),
            not_listed=len(keys) - MAX_UNRECOVERABLE_WARNINGS,
        )
