"""The key object of the seed (``GET /keys``), the request bodies around it, and
``POST /verify``'s request and verdict."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictStr,
    StringConstraints,
    model_validator,
)

from keyhouse.keys.format import IMPORTED_KEY_MIN_LENGTH, MAX_KEY_LENGTH, KeyType
from keyhouse.keys.restrictions import (
    MAX_ATTRIBUTE_VALUE_LENGTH,
    MAX_ATTRIBUTE_VALUES,
    MAX_CIDRS,
    MAX_ORIGINS,
    MAX_SCOPES,
    is_scope_name,
)
from keyhouse.schemas import Name, NotNull, Schema, Timestamp, omittable

__all__ = [
    "DEFAULT_ROLL_GRACE_SECONDS",
    "MAX_ROLL_GRACE_SECONDS",
    "ApiKey",
    "CreateKeyRequest",
    "ImportKeyRequest",
    "KeyRestrictions",
    "ListKeysQuery",
    "ListKeysResponse",
    "RenameKeyRequest",
    "RollKeyRequest",
    "UpdateKeyRequest",
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


# -- scopes and restrictions (issue 15) ------------------------------------------------
#
# The shapes only, and bounds that keep the work of a bad request small; what the
# values mean (scope names in the catalog, CIDRs without host bits, origins,
# declared attributes) is checked by keys/restrictions.py, in the service.

Scopes = Annotated[
    list[Annotated[StrictStr, StringConstraints(max_length=101)]],
    Field(
        max_length=MAX_SCOPES,
        description=(
            "What the key may do: scope names of the platform's catalog (`GET /admin/scopes`) "
            "or keyhouse's built-in ones (`keys:read`, `keys:write`, `environments:read`, "
            "`environments:write`, `events:read`, `account:read`); `messages:*` grants every "
            "`messages:` scope. Left out: the key is unrestricted (every scope)."
        ),
        examples=[["messages:send"]],
    ),
]


class KeyRestrictions(Schema):
    """Where and for what a key may be used; each member restricts only when present."""

    model_config = ConfigDict(title="Restrictions")

    ipAllowlist: Annotated[
        list[Annotated[StrictStr, StringConstraints(max_length=64)]] | None, NotNull
    ] = omittable(
        f"CIDRs the key may be used from (at most {MAX_CIDRS}), e.g. `203.0.113.0/24`, "
        "`2001:db8::/32`; host bits must be zero. Checked on keyhouse's own API (the "
        "connection's address) and by `POST /verify` (its `ip`).",
        min_length=1,
        max_length=MAX_CIDRS,
    )
    allowedOrigins: Annotated[
        list[Annotated[StrictStr, StringConstraints(max_length=300)]] | None, NotNull
    ] = omittable(
        f"Public keys only: the web origins the key may be used from (at most {MAX_ORIGINS}), "
        "`https://app.example.com` or `https://*.example.com`; checked by `POST /verify` "
        "(its `origin`).",
        min_length=1,
        max_length=MAX_ORIGINS,
    )
    attributes: Annotated[
        dict[
            StrictStr,
            Annotated[
                list[
                    Annotated[StrictStr, StringConstraints(max_length=MAX_ATTRIBUTE_VALUE_LENGTH)]
                ],
                Field(min_length=1, max_length=MAX_ATTRIBUTE_VALUES),
            ],
        ]
        | None,
        NotNull,
    ] = omittable(
        "Attribute name (declared in the catalog) -> the values the key may be used with, "
        'e.g. `{"senderDomain": ["acme.com"]}`; checked by `POST /verify` (its `attributes`).',
        min_length=1,
        max_length=64,
    )

    def to_data(self) -> dict[str, Any]:
        """The members sent, as ``restrictions.parse_restrictions`` takes them."""
        return self.model_dump(exclude_none=True)


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
    scopes: list[str] | None = omittable(
        "The key's scopes; omitted when the key is unrestricted (it may do everything)."
    )
    restrictions: KeyRestrictions | None = omittable(
        "The key's restrictions (IP allowlist, origins, attributes); omitted when it has none."
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
    scopes: Annotated[Scopes | None, NotNull] = omittable(
        "What the key may do (see the key object). Left out: unrestricted, or, for a "
        "restricted caller, the caller's own scopes. A restricted caller may give only "
        "scopes among its own (403 `scope_escalation`)."
    )
    restrictions: Annotated[KeyRestrictions | None, NotNull] = omittable(
        "Where the key may be used. Left out: none, or, for a restricted caller, the "
        "caller's own. A restricted caller may give only restrictions at least as narrow "
        "as its own (403 `scope_escalation`)."
    )


class RenameKeyRequest(Schema):
    """Only the name can change; any other member is refused (no mass assignment)."""

    name: Name


class UpdateKeyRequest(Schema):
    """What ``PATCH /keys/{id}`` changes: the members sent, at least one; any other
    member (``revoked``, ``key``, ``keyType``, ...) is refused (no mass assignment)."""

    name: Annotated[Name | None, NotNull] = omittable("A new name.")
    scopes: Scopes | None = Field(
        default=None,
        description=(
            "The key's new scopes, replacing its own; `null` makes it unrestricted. "
            "Narrowing needs `keys:write`; widening (a scope it does not have, or `null`) "
            "needs an unrestricted account-wide secret key or the operator."
        ),
    )
    restrictions: KeyRestrictions | None = Field(
        default=None,
        description=(
            "The key's new restrictions, replacing its own (not merged); `null` or `{}` "
            "removes them, which is widening."
        ),
    )

    @model_validator(mode="after")
    def _something(self) -> UpdateKeyRequest:
        if not self.model_fields_set:
            raise ValueError("send at least one of name, scopes and restrictions")
        return self

    def changes(self) -> dict[str, Any]:
        """The members sent, as ``KeyService.update``'s keyword arguments (a member
        left out is not among them; ``scopes``/``restrictions`` None: remove)."""
        sent = self.model_fields_set
        out: dict[str, Any] = {}
        if "name" in sent:
            out["name"] = self.name
        if "scopes" in sent:
            out["scopes"] = self.scopes
        if "restrictions" in sent:
            restrictions = self.restrictions
            out["restrictions"] = None if restrictions is None else restrictions.to_data()
        return out


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
    scopes: Annotated[Scopes | None, NotNull] = omittable(
        "What the key may do, as for `POST /keys`. Left out: unrestricted."
    )
    restrictions: Annotated[KeyRestrictions | None, NotNull] = omittable(
        "Where the key may be used, as for `POST /keys`. Left out: none."
    )


# -- POST /verify: the operator's platform asks whether a key may pass ----------

VerifyCode = Literal[
    "valid",
    "malformed",
    "not_found",
    "revoked",
    "expired",
    "usage_exceeded",
    "rate_limited",
    "insufficient_scope",
    "ip_not_allowed",
    "origin_not_allowed",
    "attribute_not_allowed",
    "secret_key_in_browser",
]


def _scope_name(value: str) -> str:
    if not is_scope_name(value):
        raise ValueError("must be a scope name: resource:action in lowercase, no wildcard")
    return value


def _ip_address(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("must be an IPv4 or IPv6 address") from None
    return value


class VerifyRequest(Schema):
    key: StrictStr = Field(
        min_length=1, max_length=1024, description="The key string your user sent."
    )
    scopes: Annotated[
        list[Annotated[StrictStr, StringConstraints(max_length=100), AfterValidator(_scope_name)]]
        | None,
        NotNull,
    ] = omittable(
        "Scopes the request needs (`messages:send`): each must be granted by the key's "
        "scopes, else `insufficient_scope`. An unrestricted key grants every scope.",
        max_length=MAX_SCOPES,
    )
    ip: Annotated[
        Annotated[StrictStr, StringConstraints(max_length=64), AfterValidator(_ip_address)] | None,
        NotNull,
    ] = omittable(
        "Your user's IP address. Checked when the key has an `ipAllowlist` (a key with "
        "one, verified without `ip`, is refused: `ip_not_allowed`)."
    )
    origin: Annotated[Annotated[StrictStr, StringConstraints(max_length=300)] | None, NotNull] = (
        omittable(
            "The `Origin` header your user's browser sent. Checked when the key has "
            "`allowedOrigins` (a key with them, verified without `origin`, is refused: "
            "`origin_not_allowed`); a secret key given with an `origin`, of an account that "
            "refuses secret keys from browsers, is refused (`secret_key_in_browser`)."
        )
    )
    attributes: Annotated[
        dict[StrictStr, Annotated[StrictStr, StringConstraints(max_length=256)]] | None,
        NotNull,
    ] = omittable(
        'The request\'s attributes, e.g. `{"senderDomain": "acme.com"}`: each one the key '
        "restricts must be among its values, and be given (`attribute_not_allowed`); "
        "attributes the key does not restrict pass.",
        max_length=64,
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
            "requests are used up); `rate_limited` (the key's rate limit). Refused by the "
            "key's scopes or restrictions, not counted (`reason` says what failed): "
            "`insufficient_scope`, `ip_not_allowed`, `origin_not_allowed`, "
            "`attribute_not_allowed`, `secret_key_in_browser`."
        )
    )
    reason: str | None = omittable(
        "Why the key's scopes or restrictions refused it: the scope, address, origin or "
        "attribute that failed."
    )
    keyId: str | None = omittable("The key's id (jti).")
    accountId: str | None = omittable("The account that owns the key.")
    environmentId: str | None = omittable("The key's environment, when it is scoped to one.")
    keyType: KeyType | None = omittable("secret or public.")
    name: str | None = omittable("The key's name.")
    expiresAt: str | None = omittable("When the key expires, if it does.")
    scopes: list[str] | None = omittable("The key's scopes, when it is restricted to some.")
    restrictions: KeyRestrictions | None = omittable("The key's restrictions, when it has some.")
    ratelimit: RateLimitInfo | None = omittable("When the account's plan has a rate limit.")
    usage: UsageInfo | None = omittable("For a key that exists and is in force.")
