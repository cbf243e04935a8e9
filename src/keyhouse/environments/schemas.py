"""Environments: named scopes inside an account (``production``, ``staging``)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from keyhouse.models import Environment as EnvironmentRow
from keyhouse.schemas import Name, Schema
from keyhouse.timeutil import format_ts

__all__ = ["CreateEnvironmentRequest", "Environment", "ListEnvironmentsResponse"]


class Environment(BaseModel):
    """A named scope inside an account; keys may be scoped to one."""

    model_config = ConfigDict(title="Environment")

    id: str = Field(description="Unique identifier of the environment (env_...)")
    accountId: str = Field(description="The account ID that owns this environment")
    name: str = Field(description="Name, unique within the account")
    createdAt: str = Field(description="ISO 8601 timestamp when the environment was created")

    @classmethod
    def from_row(cls, row: EnvironmentRow) -> Environment:
        return cls(
            id=row.id, accountId=row.account_id, name=row.name, createdAt=format_ts(row.created_at)
        )


class ListEnvironmentsResponse(BaseModel):
    """The account's environments, newest first."""

    model_config = ConfigDict(title="ListEnvironmentsResponse")

    environments: list[Environment]


class CreateEnvironmentRequest(Schema):
    name: Name
