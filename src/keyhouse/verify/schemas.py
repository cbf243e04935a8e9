"""``POST /verify``: the operator's platform asks whether a key may pass."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr

from keyhouse.keys.format import KeyType
from keyhouse.schemas import Schema, omittable

__all__ = ["VerifyRequest", "VerifyResponse"]

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
