"""The key object (the seed's ``GET /keys`` item): built here and only here.

One rule decides whether ``key`` carries the full key string:

* a key just issued (created, rolled, imported, or an account's first key)
  is always shown in full: it is the caller's one chance to copy it;
* a read of an existing key (list, get, revoke, rename) shows it in full
  unless the operator set ``KEYHOUSE_LIST_REVEALS_KEYS=false``; then secret
  keys are masked (``sk_…Ab12``) and public keys, which only verify, stay
  full.

Endpoints and the CLI call ``issued_key_object`` or ``key_object``/
``key_objects``; none of them passes the reveal flag itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from keyhouse.keys.repository import KeyView
from keyhouse.runtime import Runtime
from keyhouse.timeutil import format_stored_ts, format_ts

__all__ = ["issued_key_object", "key_object", "key_objects", "reveals_existing_keys"]


def reveals_existing_keys(runtime: Runtime) -> bool:
    """Whether a read of an existing secret key shows its full string."""
    return runtime.settings.list_reveals_keys


def issued_key_object(runtime: Runtime, row: KeyView) -> dict[str, Any]:
    """A key just issued: always in full."""
    return _object(runtime, row, reveal=True)


def key_object(runtime: Runtime, row: KeyView) -> dict[str, Any]:
    """An existing key, revealed as the operator configured."""
    return _object(runtime, row, reveal=reveals_existing_keys(runtime))


def _object(runtime: Runtime, row: KeyView, *, reveal: bool) -> dict[str, Any]:
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
    )
    return key_objects(runtime, row.account_id, [columns], reveal=reveal)[0]


def key_objects(
    runtime: Runtime,
    account_id: str,
    rows: Sequence[Sequence[Any]],
    *,
    reveal: bool | None = None,
) -> list[dict[str, Any]]:
    """Key objects of one account from rows in _VIEW_COLUMNS' order (keys/repository.py).

    ``reveal`` None: existing keys, as the operator configured; the CLI's
    table passes its ``--reveal`` choice. Optional members are left out,
    never null.

    The per-key work of a listing (10,000 keys: most of a request), as
    one loop with local names. The key strings are decrypted first, in
    one call (``Keyring.decrypt_many``).
    """
    if reveal is None:
        reveal = reveals_existing_keys(runtime)
    # Unpacked by position in _VIEW_COLUMNS' order: reading a Row by
    # attribute name cost ~0.3 us a member, most of the per-key time.
    plain = iter(
        runtime.keyring.decrypt_many(
            (row[5], row[4], row[0]) for row in rows if reveal or row[2] == "public"
        )
    )
    pending_of = runtime.last_used.pending_lookup()
    stamp = format_stored_ts
    out = []
    for (
        key_id,
        environment_id,
        key_type,
        name,
        _ciphertext,
        _enc_kid,
        key_hint,
        revoked,
        created_at,
        stored_last_used,
        expires_at,
    ) in rows:
        obj: dict[str, Any] = {
            "id": key_id,
            "key": next(plain) if reveal or key_type == "public" else key_hint,
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
        out.append(obj)
    return out
