"""Accounts and their plan limits."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from keyhouse.config import PLAN_LIMIT_MAX
from keyhouse.keys.schemas import ApiKey
from keyhouse.models import Account as AccountRow
from keyhouse.schemas import Name, NotNull, Schema, omittable
from keyhouse.timeutil import format_ts

__all__ = [
    "Account",
    "CreateAccountRequest",
    "CreateAccountResponse",
    "Limits",
    "LimitsUpdate",
    "ListAccountsResponse",
    "UpdateAccountRequest",
]

# Strict: "10" or true is a client bug, not a limit of 10 or 1. At most what the
# INTEGER columns hold (config.PLAN_LIMIT_MAX).
Count = Annotated[StrictInt, Field(ge=0, le=PLAN_LIMIT_MAX)]
Positive = Annotated[StrictInt, Field(ge=1, le=PLAN_LIMIT_MAX)]


class Limits(BaseModel):
    """The account's plan. Each limit is an integer, or null for unlimited."""

    model_config = ConfigDict(title="Limits")

    maxKeys: Count | None = Field(description="Active keys the account may hold.")
    monthlyRequests: Count | None = Field(
        description="Account-API calls plus verifications per UTC calendar month."
    )
    ratePerSecond: Positive | None = Field(description="Token bucket refill rate, per key.")
    burst: Positive | None = Field(description="Token bucket size, per key.")

    @classmethod
    def from_row(cls, row: AccountRow) -> Limits:
        return cls(
            maxKeys=row.max_keys,
            monthlyRequests=row.monthly_requests,
            ratePerSecond=row.rate_per_second,
            burst=row.burst,
        )


class LimitsUpdate(Schema):
    """Limits to set; members left out keep their value, null means unlimited."""

    maxKeys: Count | None = None
    monthlyRequests: Count | None = None
    ratePerSecond: Positive | None = None
    burst: Positive | None = None


class Account(BaseModel):
    """A customer of the operator."""

    model_config = ConfigDict(title="Account")

    id: str = Field(description="Unique identifier of the account (acc_...)")
    name: str
    limits: Limits
    refuseSecretKeysFromBrowsers: bool = Field(
        description=(
            "When true, a secret key of the account sent by a web browser (a request with "
            "an `Origin` header, or `Sec-Fetch-Site: cross-site`) is refused with 403 "
            "`secret_key_in_browser`, and `POST /verify` refuses a secret key given with an "
            "`origin` (`secret_key_in_browser`). Default false."
        )
    )
    createdAt: str = Field(description="ISO 8601 timestamp when the account was created")

    @classmethod
    def from_row(cls, row: AccountRow) -> Account:
        return cls(
            id=row.id,
            name=row.name,
            limits=Limits.from_row(row),
            refuseSecretKeysFromBrowsers=bool(row.refuse_secret_keys_from_browsers),
            createdAt=format_ts(row.created_at),
        )

    def to_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class Usage(BaseModel):
    """Requests counted this period (a UTC calendar month)."""

    model_config = ConfigDict(title="Usage")

    requests: int = Field(description="Account-API calls and verifications counted so far.")
    periodStart: str = Field(description="ISO 8601: the period's start.")
    resetsAt: str = Field(description="ISO 8601: when the period ends and usage resets.")


class AccountWithUsage(Account):
    """The caller's account: plan limits and this period's usage."""

    model_config = ConfigDict(title="AccountWithUsage")

    usage: Usage


class CreateAccountRequest(Schema):
    name: Name
    limits: Annotated[LimitsUpdate | None, NotNull] = omittable(
        "Plan limits; those left out take the defaults."
    )


class UpdateAccountRequest(Schema):
    name: Annotated[Name | None, NotNull] = omittable("A new name.")
    limits: Annotated[LimitsUpdate | None, NotNull] = omittable(
        "Limits to change; null members mean unlimited."
    )
    refuseSecretKeysFromBrowsers: Annotated[StrictBool | None, NotNull] = omittable(
        "true: refuse the account's secret keys when a web browser sends them (see the "
        "account object)."
    )


class CreateAccountResponse(BaseModel):
    """The new account and its first account-wide secret key (shown in full, once)."""

    model_config = ConfigDict(title="CreateAccountResponse")

    account: Account
    key: ApiKey


class ListAccountsResponse(BaseModel):
    model_config = ConfigDict(title="ListAccountsResponse")

    accounts: list[Account]
