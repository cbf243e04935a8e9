"""The key object of the seed (``GET /keys``), the request bodies around it, and
``POST /verify``'s request and verdict."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH, MAX_KEY_LENGTH, KeyType
from keyhouse.schemas import Name, NotNull, Schema, Timestamp, omittable

__all__ = [
    "DEFAULT_ROLL_GRACE_SECONDS",
    "MAX_ROLL_GRACE_SECONDS",
    "ApiKey",
    "CreateKeyRequest",
    "ImportKeyRequest",
    "ListKeysQuery",
    "ListKeysResponse",
    "RenameKeyRequest",
    "RollKeyRequest",
    "VerifyRequest",
    "VerifyResponse",
]

# How long a rolled key keeps working, in seconds: a day unless the caller
# says otherwise, at most a week (the API, the CLI and the service share these).
DEFAULT_ROLL_GRACE_SECONDS = 86_400
MAX_ROLL_GRACE_SECONDS = 604_800


class ListKeysQuery(BaseModel):
    """The filters of ``GET /keys``, each optional; another parameter is refused (400)."""

    environmentId: str | None = Field(
        None, pattern=r"^env_[0-9A-Za-z]{1,60}$", description="Only keys of this environment."
    )
    keyType: KeyType | None = Field(None, description="Only keys of this type.")
    revoked: bool | None = Field(
        None,
        description="true: only revoked keys; false: only keys not revoked (expired too).",
    )


class ApiKey(BaseModel):
    """An API key, as the seed's ``GET /keys`` documents it."""

    model_config = ConfigDict(title="ApiKey")

    id: str = Field(description="Unique identifier for the key (jti)")
    key: str = Field(
        description=(
            "The full key string with prefix (shown for reference but should be stored "
            "securely by user). Masked (`sk_…Ab12`) for secret keys in listings when the "
            "operator sets KEYHOUSE_LIST_REVEALS_KEYS=false."
        )
    )
    keyType: KeyType = Field(description="Type of API key")
    environmentId: str | None = omittable(
        "Environment ID if the key is scoped to a specific environment"
    )
    accountId: str = Field(description="The account ID that owns this key")
    name: str = Field(description="Human-readable name/description for the key")
    revoked: bool = Field(description="Whether the key has been revoked")
    createdAt: str = Field(description="ISO 8601 timestamp when the key was created")
    lastUsedAt: str | None = omittable(
        "ISO 8601 timestamp of when the key was last used (if tracked)"
    )
    expiresAt: str | None = omittable(
        "ISO 8601 timestamp when the key expires (omitted when it never does)"
    )
    recoverable: Literal[False] | None = omittable(
        "Present, and false, only when keyhouse cannot decrypt the stored key (its "
        "encryption key is no longer in KEYHOUSE_ENCRYPTION_KEYS, or the ciphertext is "
        "damaged): `key` is then masked (`sk_…Ab12`). The key still verifies, and can be "
        "revoked, rolled and renamed."
    )


class ListKeysResponse(BaseModel):
    """Response body for GET /keys endpoint Lists all API keys for the authenticated account"""

    model_config = ConfigDict(title="ListKeysResponse")

    keys: list[ApiKey] = Field(
        description="Array of API key metadata (does not include the actual key strings)"
    )


class CreateKeyRequest(Schema):
    """A new key. An environment-scoped caller can only create keys in its environment."""

    name: Name
    keyType: KeyType = Field(description="`secret` manages the account; `public` only verifies.")
    environmentId: Annotated[str | None, NotNull] = omittable(
        "Scope the key to this environment; omitted: account-wide (or the caller's "
        "environment, for an environment-scoped caller).",
        max_length=64,
    )
    expiresAt: Annotated[Timestamp | None, NotNull] = omittable(
        "When the key stops working: a JSON string, an ISO 8601 date-time with a time zone "
        "(RFC 3339, e.g. `2027-01-31T12:00:00Z`), in the future and before the year "
        "10000 in UTC. A number (Unix time) is refused."
    )


class RenameKeyRequest(Schema):
    """Only the name can change; any other member is refused (no mass assignment)."""

    name: Name


class RollKeyRequest(Schema):
    expiresInSeconds: int = Field(
        default=DEFAULT_ROLL_GRACE_SECONDS,
        ge=0,
        le=MAX_ROLL_GRACE_SECONDS,
        description=(
            "How long the old key keeps working, in seconds: a JSON integer from 0 (stops "
            'at once) to 604800 (7 days); default 86400 (one day). A string (`"60"`), a '
            "boolean or a fraction is refused."
        ),
    )


class ImportKeyRequest(Schema):
    """An existing key from another system, stored hashed and encrypted.

    A key that starts with one of keyhouse's prefixes (`sk_`, `pk_` or the
    operator's) must be imported as that type: a `pk_...` key imported as
    `secret` would let client-side code manage the account.
    """

    key: str = Field(
        pattern=rf"^[A-Za-z0-9._~-]{{{IMPORTED_KEY_MIN_LENGTH},{MAX_KEY_LENGTH}}}$",
        description=(
            "The key exactly as your users hold it: "
            f"{IMPORTED_KEY_MIN_LENGTH}-{MAX_KEY_LENGTH} URL-safe characters."
        ),
    )
    name: Name
    keyType: KeyType = Field(
        description="`secret` or `public`; a key with a keyhouse prefix must be of its type."
    )
    environmentId: Annotated[str | None, NotNull] = omittable(
        "Scope the key to this environment.", max_length=64
    )


# -- POST /verify: the operator's platform asks whether a key may pass ----------

VerifyCode = Literal[
    "valid", "malformed", "not_found", "revoked", "expired", "usage_exceeded", "rate_limited"
]


class VerifyRequest(Schema):
    key: StrictStr = Field(
        min_length=1, max_length=1024, description="The key string your user sent."
    )


class RateLimitInfo(BaseModel):
    """The key's token bucket after this verification."""

    model_config = ConfigDict(title="RateLimitInfo")

    limit: int = Field(description="Bucket size (burst).")
    remaining: int = Field(description="Requests left right now.")
    reset: int = Field(description="Seconds until the bucket is full again.")


class UsageInfo(BaseModel):
    """The account's usage this period (a UTC calendar month)."""

    model_config = ConfigDict(title="UsageInfo")

    requests: int = Field(description="Requests counted this period.")
    limit: int | None = omittable("The plan's monthly requests; omitted when unlimited.")
    resetsAt: str = Field(description="When the period ends and usage resets.")


class VerifyResponse(BaseModel):
    """The verdict. Key details are given when the key exists (valid, revoked, expired)."""

    model_config = ConfigDict(title="VerifyResponse")

    valid: bool = Field(description="true only when `code` is `valid`.")
    code: VerifyCode = Field(
        description=(
            "`valid`; `malformed` (a keyhouse key whose checksum fails: a typo); "
            "`not_found`; `revoked`; `expired`; `usage_exceeded` (the account's monthly "
            "requests are used up); `rate_limited` (the key's rate limit)."
        )
    )
    keyId: str | None = omittable("The key's id (jti).")
    accountId: str | None = omittable("The account that owns the key.")
    environmentId: str | None = omittable("The key's environment, when it is scoped to one.")
    keyType: KeyType | None = omittable("secret or public.")
    name: str | None = omittable("The key's name.")
    expiresAt: str | None = omittable("When the key expires, if it does.")
    ratelimit: RateLimitInfo | None = omittable("When the account's plan has a rate limit.")
    usage: UsageInfo | None = omittable("For a key that exists and is in force.")
