"""The audit log: who changed what, recorded in the change's own transaction.

Services call ``AuditService.record`` with the session that makes the
change, so a change and its event commit together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from keyhouse.audit.repository import EventRepository
from keyhouse.db.session import DbSession
from keyhouse.ids import new_id
from keyhouse.models import Event
from keyhouse.timeutil import format_ts

__all__ = ["CLI", "Actor", "AuditService", "event_object"]

MAX_PAGE = 100


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a key (``id`` is its id), the operator's admin token, or the CLI."""

    type: Literal["key", "admin", "cli"]
    id: str | None = None
    ip: str | None = None
    user_agent: str | None = None


CLI = Actor("cli")


class AuditService:
    def __init__(self, session: DbSession) -> None:
        self.repo = EventRepository(session)

    def record(
        self,
        type_: str,
        *,
        account_id: str | None,
        actor: Actor,
        key_id: str | None = None,
        environment_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> Event:
        event_id, created_at = new_id("evt")
        event = Event(
            id=event_id,
            account_id=account_id,
            type=type_,
            key_id=key_id,
            environment_id=environment_id,
            actor_type=actor.type,
            actor_id=actor.id,
            ip=actor.ip,
            user_agent=(actor.user_agent or None) and actor.user_agent[:512],
            data=data,
            created_at=created_at,
        )
        self.repo.add(event)
        return event

    async def list(
        self,
        account_id: str | None,
        *,
        limit: int = 20,
        starting_after: str | None = None,
        scope_environment_id: str | None = None,
    ) -> tuple[list[Event], bool]:
        """A page of at most ``MAX_PAGE`` events, newest first, and whether more follow.

        ``account_id`` None: the events of every account (``GET /admin/events``).
        """
        limit = min(limit, MAX_PAGE)
        rows = list(
            await self.repo.list(
                account_id,
                limit=limit + 1,
                starting_after=starting_after,
                environment_id=scope_environment_id,
            )
        )
        return rows[:limit], len(rows) > limit


def event_object(row: Event, *, with_account: bool = False) -> dict[str, Any]:
    """The event as the API shows it; absent members are left out.

    ``with_account``: with ``accountId``, for the operator's log of every
    account (an account's own log needs none); an operator event of keyhouse
    as a whole (``scopes.updated``) has none.
    """
    actor: dict[str, Any] = {"type": row.actor_type}
    if row.actor_id is not None:
        actor["id"] = row.actor_id
    obj: dict[str, Any] = {"id": row.id, "type": row.type}
    if with_account and row.account_id is not None:  # None: an event of keyhouse as a whole
        obj["accountId"] = row.account_id
    if row.key_id is not None:
        obj["keyId"] = row.key_id
    if row.environment_id is not None:
        obj["environmentId"] = row.environment_id
    obj["actor"] = actor
    if row.ip is not None:
        obj["ip"] = row.ip
    if row.user_agent is not None:
        obj["userAgent"] = row.user_agent
    if row.data:
        obj["data"] = row.data
    obj["createdAt"] = format_ts(row.created_at)
    return obj
