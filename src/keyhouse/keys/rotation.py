"""Encryption-key rotation: every stored key moved under the newest encryption key.

``KEYHOUSE_ENCRYPTION_KEYS`` lists encryption keys newest first: new keys
are encrypted under the first, and a key stored under an older one stays
readable while that one is listed. ``keyhouse key reencrypt`` runs
``reencrypt_all``, which calls ``RotationService.reencrypt_batch`` until
nothing is left, so the old encryption key can then be removed.

Resumable: each batch is committed in its own transaction (``reencrypt_all``
opens them, as verification opens its own for an expiry event), and a batch
takes only keys not under the newest encryption key, so a run that was
stopped (even killed) and started again goes on where it stopped and never
rewrites a key twice. A batch is all or nothing, so no key is half-moved.

Safe beside running servers: only a key's ciphertext and its encryption key
id change (verification reads neither), and a key another transaction is
writing at that moment is passed over and tried again at the end of the run
(``KeyRepository.lock_not_under_encryption_key`` says why); one still busy
then is reported as such, for a rerun.

A key that cannot be read (its encryption key is not configured, its
ciphertext is damaged, or it decrypts to a string whose hash is not the
key's) is reported and left as it is: its ciphertext is never replaced by
something that is not the key. Only ids and encryption key ids are
reported, never a key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from keyhouse.db.session import DbSession
from keyhouse.keys import changes
from keyhouse.keys.crypto import hash_key
from keyhouse.keys.repository import KeyRepository
from keyhouse.runtime import Runtime

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "Batch",
    "Report",
    "RotationService",
    "Unreadable",
    "reencrypt_all",
]

# Keys per transaction: small enough that a transaction holds its row locks
# for milliseconds and a killed run loses little work, large enough that the
# commits do not dominate.
DEFAULT_BATCH_SIZE = 500
# Keys another transaction held are tried again this many times, after
# 0.05 s, 0.1 s, ...: a request holds a key's row for milliseconds.
BUSY_RETRIES = 5

Reason = Literal[
    "encryption_key_not_configured", "ciphertext_does_not_decrypt", "hash_does_not_match"
]


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A key that could not be moved, and why (ids only)."""

    key_id: str
    account_id: str
    enc_kid: str
    reason: Reason

    def to_json(self) -> dict[str, str]:
        return {
            "keyId": self.key_id,
            "accountId": self.account_id,
            "encKid": self.enc_kid,
            "reason": self.reason,
        }


@dataclass(slots=True)
class Batch:
    """What one batch did. ``last_id`` None: there was nothing left to look at.

    ``busy``: keys another transaction was writing, passed over for now.
    """

    moved: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)
    last_id: str | None = None


@dataclass(slots=True)
class Report:
    """What a whole run did: keys moved under ``enc_kid``, those it could not read,
    and those other writes kept busy until the end (a rerun moves them)."""

    enc_kid: str
    moved: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not self.unreadable and not self.busy

    def to_json(self) -> dict[str, object]:
        return {
            "encryptionKeyId": self.enc_kid,
            "moved": self.moved,
            "unreadable": [u.to_json() for u in self.unreadable],
            "busy": list(self.busy),
        }


class RotationService:
    def __init__(self, session: DbSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = KeyRepository(session)

    async def reencrypt_batch(self, *, after: str | None, limit: int = DEFAULT_BATCH_SIZE) -> Batch:
        """Move up to ``limit`` keys (ids after ``after``) under the newest encryption key."""
        ids = await self.repo.ids_not_under_encryption_key(
            self.runtime.keyring.current_kid, after=after, limit=limit
        )
        batch = await self._reencrypt(ids)
        batch.last_id = ids[-1] if ids else None
        return batch

    async def reencrypt_ids(self, ids: Sequence[str]) -> Batch:
        """Move those of ``ids`` that are not under the newest encryption key yet."""
        pending = await self.repo.ids_not_under_encryption_key(
            self.runtime.keyring.current_kid, among=ids, limit=len(ids)
        )
        return await self._reencrypt(pending)

    async def _reencrypt(self, ids: Sequence[str]) -> Batch:
        keyring = self.runtime.keyring
        batch = Batch()
        if not ids:
            return batch
        rows = await self.repo.lock_not_under_encryption_key(keyring.current_kid, ids)
        held = {row[0] for row in rows}
        # Not returned: locked by another transaction (or moved by another run just now).
        batch.busy = [key_id for key_id in ids if key_id not in held]
        for key_id, account_id, enc_kid, ciphertext, key_hash in rows:
            plain = keyring.decrypt_each([(enc_kid, ciphertext, key_id)])[0]
            reason: Reason
            if plain is None:
                reason = (
                    "ciphertext_does_not_decrypt"
                    if keyring.knows(enc_kid)
                    else "encryption_key_not_configured"
                )
            elif hash_key(plain) != bytes(key_hash):
                reason = "hash_does_not_match"
            else:
                sealed = keyring.encrypt(plain, associated=key_id)
                if await self.repo.set_ciphertext(
                    key_id, from_kid=enc_kid, kid=sealed.kid, ciphertext=sealed.ciphertext
                ):
                    batch.moved += 1
                continue
            batch.unreadable.append(Unreadable(key_id, account_id, enc_kid, reason))
        return batch


async def reencrypt_all(
    runtime: Runtime,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    on_batch: Callable[[Batch], None] | None = None,
) -> Report:
    """Every key under the newest encryption key, a committed batch at a time."""
    report = Report(runtime.keyring.current_kid)
    busy: list[str] = []

    def count(batch: Batch) -> None:
        report.moved += batch.moved
        report.unreadable.extend(batch.unreadable)
        if on_batch is not None:
            on_batch(batch)

    after: str | None = None
    while True:
        # Its own transaction per batch: what committed stays done if the run stops.
        async with changes.session(runtime, write=True) as session:
            batch = await RotationService(session, runtime).reencrypt_batch(
                after=after, limit=batch_size
            )
        if batch.last_id is None:
            break
        after = batch.last_id
        busy.extend(batch.busy)
        count(batch)
    for attempt in range(BUSY_RETRIES):
        if not busy:
            break
        await asyncio.sleep(0.05 * (attempt + 1))
        retried: list[str] = []
        for start in range(0, len(busy), batch_size):
            async with changes.session(runtime, write=True) as session:
                batch = await RotationService(session, runtime).reencrypt_ids(
                    busy[start : start + batch_size]
                )
            retried.extend(batch.busy)
            count(batch)
        busy = retried
    report.busy = busy
    return report
