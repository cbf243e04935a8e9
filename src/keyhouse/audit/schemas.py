"""The audit log's event object, as ``GET /events`` returns it."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keyhouse.schemas import omittable

__all__ = ["AdminEvent", "Event", "EventActor", "ListAdminEventsResponse", "ListEventsResponse"]

EventType = Literal[
    "key.created",
    "key.imported",
    "key.renamed",
    "key.updated",
    "key.rolled",
    "key.revoked",
    "key.expired",
    "environment.created",
    "account.created",
    "account.updated",
    "scopes.updated",
]


class EventActor(BaseModel):
    """Who made the change: a key of the account, the operator (admin token), or the CLI.

    Named apart from ``audit.service.Actor``, the dataclass services record.
    """

    model_config = ConfigDict(title="EventActor")

    type: Literal["key", "admin", "cli"]
    id: str | None = omittable("The key's id when type is `key`.")


class Event(BaseModel):
    """One recorded change. Never holds a key string."""

    model_config = ConfigDict(title="Event")

    id: str = Field(description="Unique identifier of the event (evt_...)")
    type: EventType
    keyId: str | None = omittable("The key the event is about.")
    environmentId: str | None = omittable("The environment the event is about.")
    actor: EventActor
    ip: str | None = omittable("The caller's IP address, for API calls.")
    userAgent: str | None = omittable("The caller's User-Agent, for API calls.")
    data: dict[str, Any] | None = omittable(
        "Details: for key.rolled, `rolledTo` (the new key's id) and `expiresAt` of the old "
        "key; for key.updated, `before` and `after` (`scopes`, `restrictions`; null: none)."
    )
    createdAt: str = Field(description="ISO 8601 timestamp of the change")


class ListEventsResponse(BaseModel):
    """A page of the audit log, newest first."""

    model_config = ConfigDict(title="ListEventsResponse")

    events: list[Event]
    hasMore: bool = Field(description="More events follow; pass the last id as startingAfter.")


class AdminEvent(Event):
    """An event of the operator's log: any account's, so it names the account."""

    model_config = ConfigDict(title="AdminEvent")

    accountId: str | None = omittable(
        "The account the event belongs to; absent for an event of keyhouse as a whole "
        "(scopes.updated: the scope catalog)."
    )


class ListAdminEventsResponse(BaseModel):
    """A page of every account's audit log, newest first."""

    model_config = ConfigDict(title="ListAdminEventsResponse")

    events: list[AdminEvent]
    hasMore: bool = Field(description="More events follow; pass the last id as startingAfter.")
