"""Every table, in one place (one import for Alembic).

Invariant: an API key is stored as a SHA-256 hash (for lookup) and an
AES-256-GCM ciphertext (so ``GET /keys`` can show it), never in plaintext.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from keyhouse.db.base import Base, UTCDateTime

__all__ = [
    "Account",
    "ApiKey",
    "CatalogEntry",
    "Environment",
    "Event",
    "IdempotencyRecord",
    "Usage",
    "UsageFlush",
]


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Plan limits; NULL is unlimited.
    max_keys: Mapped[int | None] = mapped_column(Integer)
    monthly_requests: Mapped[int | None] = mapped_column(Integer)
    rate_per_second: Mapped[int | None] = mapped_column(Integer)
    burst: Mapped[int | None] = mapped_column(Integer)
    # Refuse a secret key sent with Origin or Sec-Fetch-Site: cross-site (issue 15).
    refuse_secret_keys_from_browsers: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )


class Environment(Base):
    __tablename__ = "environments"
    __table_args__ = (UniqueConstraint("account_id", "name", name="uq_environments_account_name"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ApiKey(Base):
    __tablename__ = "api_keys"
    __table_args__ = (
        # GET /keys: one account's keys, newest first.
        Index("ix_api_keys_account_created", "account_id", "created_at", "id"),
    )

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    environment_id: Mapped[str | None] = mapped_column(
        ForeignKey("environments.id", ondelete="CASCADE"), index=True
    )
    key_type: Mapped[str] = mapped_column(String(10))
    name: Mapped[str] = mapped_column(String(100))
    key_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    key_ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    enc_kid: Mapped[str] = mapped_column(String(32))
    # "sk_…Ab12": what people see when keys are not revealed; no secret in it.
    key_hint: Mapped[str] = mapped_column(String(40))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Set once, when a use first finds the key expired (its key.expired event).
    expiry_recorded_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    imported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The key a roll replaced this one with (its key.rolled event says the same):
    # a key is rolled once; rolling it again while its grace lasts is refused.
    rolled_to: Mapped[str | None] = mapped_column(String(30))
    # Issue 15 (keys/restrictions.py): NULL scopes is an unrestricted key; the
    # list is validated and sorted. restrictions is Restrictions.to_json().
    # none_as_null: None is SQL NULL, not the JSON text 'null' (SQLAlchemy's
    # default), so "IS NULL" means unrestricted whoever wrote the row.
    scopes: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True))
    restrictions: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))


class CatalogEntry(Base):
    """The platform's scope catalog (PUT /admin/scopes): one row per declared
    scope (``kind`` "scope") or attribute (``kind`` "attribute"). Global, not
    per account: the operator declares what its platform's keys may do."""

    __tablename__ = "catalog_entries"

    kind: Mapped[str] = mapped_column(String(10), primary_key=True)
    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    description: Mapped[str] = mapped_column(String(500))


class Event(Base):
    """The audit log: written in the same transaction as the change it records."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_account_id_id", "account_id", "id"),)

    id: Mapped[str] = mapped_column(String(30), primary_key=True)
    # NULL: an event of keyhouse as a whole, not of one account (the scope
    # catalog's scopes.updated): only the operator's log (GET /admin/events)
    # shows it. No made-up account: every account's log would be wrong.
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(String(40))
    key_id: Mapped[str | None] = mapped_column(String(30))
    environment_id: Mapped[str | None] = mapped_column(String(30))
    actor_type: Mapped[str] = mapped_column(String(10))
    actor_id: Mapped[str | None] = mapped_column(String(30))
    ip: Mapped[str | None] = mapped_column(String(64))
    user_agent: Mapped[str | None] = mapped_column(String(512))
    # Small JSON object with details (e.g. the key a roll made); never a key string.
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Usage(Base):
    """Requests counted per account and UTC calendar month ("2026-11")."""

    __tablename__ = "usage"

    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True
    )
    period: Mapped[str] = mapped_column(String(7), primary_key=True)
    # Requests served: what the account is billed for (limits/limiter.py).
    requests: Mapped[int] = mapped_column(BigInteger, default=0)
    # Bumped by every write to the row. A Redis counter rebuilt from the row
    # keeps the version it read, so a write saved later is known to be missing
    # from it (limits/limiter.py, "Redis").
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    # Of ``requests``, those admitted here (one ``UPDATE`` each) while Redis
    # was unreachable: any process that reaches Redis adds what its counter
    # lacks of them (limits/limiter.py, "Redis").
    fallback: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class UsageFlush(Base):
    """The last batch of counts each serving process added to ``usage``.

    Written in the batch's own transaction: a process whose commit answer was
    lost retries the batch, and finds it here if it was saved after all.
    """

    __tablename__ = "usage_flushes"

    instance: Mapped[str] = mapped_column(String(40), primary_key=True)
    batch: Mapped[int] = mapped_column(BigInteger)
    flushed_at: Mapped[datetime] = mapped_column(UTCDateTime())


class IdempotencyRecord(Base):
    """A write's answer, kept 24 h for a retry with the same ``Idempotency-Key``.

    Written in the write's own transaction: a committed write has its
    answer here, a rolled-back one has none. The answer (it can hold a full
    key) is stored as AES-256-GCM ciphertext under ``enc_kid``, never in
    plaintext.
    """

    __tablename__ = "idempotency_keys"
    __table_args__ = (Index("ix_idempotency_keys_created_at", "created_at"),)

    # Who sent it: "key:<key id>" for an account's key, "admin" for the operator.
    scope: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    # SHA-256 of the method, path, query and body: a retry must match it.
    fingerprint: Mapped[bytes] = mapped_column(LargeBinary(32))
    status_code: Mapped[int | None] = mapped_column(Integer)
    response_ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    enc_kid: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
