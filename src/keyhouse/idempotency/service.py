"""Idempotent writes, as Stripe's API has them (https://docs.stripe.com/api/idempotent_requests).

A write sent with an ``Idempotency-Key`` claims the key (its scope: the
calling key, or the operator) in its own transaction, runs, and stores its
answer in that same transaction. So a committed write always has its
answer stored, and a rolled-back one has none. A retry with the key:

* same request (method, path, query, JSON body): the stored answer again,
  nothing run, nothing changed;
* another request: 409 ``idempotency_key_reused``;
* while the first still runs: it waits for the first to end (the claim's
  row), then gets its answer, or runs itself if the first rolled back.
  Two requests with one key never both run.

Only 2xx answers are stored. Every error in keyhouse rolls its transaction
back, so it changed nothing and running the retry again is safe, and what
a client retries after an error (a 402 at maxKeys, a 409) is usually a
request that can now succeed. (Stripe stores errors too; its errors can
follow side effects, keyhouse's cannot.)

Stored answers can hold a full key: they are encrypted with the service's
encryption keys (AES-256-GCM, bound to the record's scope and key as
associated data), never stored in plaintext.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from keyhouse import errors
from keyhouse.db.session import DbSession
from keyhouse.idempotency.repository import IdempotencyRepository
from keyhouse.idempotency.schemas import HEADER, MAX_LENGTH, RETENTION, VALID
from keyhouse.runtime import Runtime
from keyhouse.timeutil import utcnow

__all__ = ["IdempotencyService", "StoredAnswer", "fingerprint", "parse_key"]


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    status_code: int
    body: bytes


def parse_key(values: list[str]) -> str | None:
    """The request's one ``Idempotency-Key`` (``values``: each header sent), or 400."""
    if not values:
        return None
    if len(values) > 1:
        raise errors.BadRequest(
            f"The request has more than one {HEADER} header.", fix=f"Send one {HEADER} header."
        )
    if VALID.fullmatch(values[0]) is None:
        # The value is not echoed: it is the client's text, of any length.
        raise errors.BadRequest(
            f"The {HEADER} header must be 1 to {MAX_LENGTH} printable ASCII characters.",
            fix=f"Send an {HEADER} such as a UUID (36 characters), new for each new request.",
        )
    return values[0]


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> bytes:
    """SHA-256 of what makes two requests the same one.

    A JSON body counts by its content: member order and spacing aside (a
    client that rebuilds its body for the retry sends the same request).
    """
    try:
        content = json.loads(body) if body else None
    except (ValueError, RecursionError):
        canonical = body
    else:
        canonical = json.dumps(
            content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    digest = hashlib.sha256()
    for part in (method.encode("ascii"), path.encode("utf-8"), query, canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.digest()


class IdempotencyService:
    def __init__(self, session: DbSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = IdempotencyRepository(session, is_sqlite=runtime.db.is_sqlite)

    async def begin(self, scope: str, key: str, print_: bytes) -> StoredAnswer | None:
        """Claim ``key`` for this request (None: run it, then ``finish``), or the stored answer."""
        now = utcnow()
        if await self.repo.claim(scope, key, print_, now):
            return None
        record = await self.repo.get(scope, key)
        expired_before = now - RETENTION
        if record is None or record.created_at < expired_before:
            # Expired: taken over, as if new. Purged since the claim (or
            # while the reclaim waited for the purge): claimed again.
            if record is not None and await self.repo.reclaim(
                scope, key, print_, now, expired_before=expired_before
            ):
                return None
            if await self.repo.claim(scope, key, print_, now):
                return None
            record = await self.repo.get(scope, key)
        if record is None:
            # Not reached: a record claimed since it was purged is fresh.
            raise errors.Conflict(
                f"The record of this {HEADER} changed while it was read.",
                fix=f"Retry the request with the same {HEADER}.",
            )
        if record.fingerprint != print_:
            raise errors.IdempotencyKeyReused()
        if record.status_code is None or record.response_ciphertext is None or not record.enc_kid:
            # Not reached: a record commits with its answer, or not at all.
            raise errors.Conflict(
                f"The request with this {HEADER} has no stored answer.",
                fix=f"Send the request with a new {HEADER}.",
            )
        try:
            body = self.runtime.keyring.decrypt(
                record.enc_kid, record.response_ciphertext, _associated(scope, key)
            )
        except errors.ConfigurationError:
            # Its encryption key was removed after `keyhouse key reencrypt`
            # (which moves keys, not these 24-hour answers): a 500 on every
            # retry for a day was what a reviewer got. The write happened; its
            # answer cannot be shown again.
            raise errors.Conflict(
                f"The request with this {HEADER} was done, but its stored answer can no "
                "longer be read: the encryption key it was stored under was removed.",
                fix="List the account's keys (GET /keys) or its events (GET /events) to find "
                f"what the request did; send a new request with a new {HEADER}.",
            ) from None
        return StoredAnswer(record.status_code, body.encode("utf-8"))

    async def finish(self, scope: str, key: str, status_code: int, body: bytes) -> None:
        """Store the answer of the request that claimed ``key``, in its transaction.

        A 2xx is stored, encrypted; anything else gives the key up (a retry runs).
        """
        if not 200 <= status_code < 300:
            await self.repo.release(scope, key)
            return
        sealed = self.runtime.keyring.encrypt(body.decode("utf-8"), _associated(scope, key))
        await self.repo.store(
            scope, key, status_code=status_code, ciphertext=sealed.ciphertext, kid=sealed.kid
        )


def _associated(scope: str, key: str) -> str:
    # A ciphertext copied onto another record does not decrypt.
    return f"idempotency:{scope}:{key}"
