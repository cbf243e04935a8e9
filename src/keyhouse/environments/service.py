"""Environments: create and list."""

from __future__ import annotations

from keyhouse import errors
from keyhouse.accounts.repository import AccountRepository
from keyhouse.audit.service import Actor, AuditService
from keyhouse.db.session import DbSession
from keyhouse.environments.repository import EnvironmentRepository
from keyhouse.ids import new_id
from keyhouse.models import Environment

__all__ = ["EnvironmentService"]


class EnvironmentService:
    def __init__(self, session: DbSession) -> None:
        self.repo = EnvironmentRepository(session)
        self.accounts = AccountRepository(session)
        self.audit = AuditService(session)

    async def create(
        self,
        account_id: str,
        name: str,
        *,
        caller_environment_id: str | None = None,
        actor: Actor,
    ) -> Environment:
        """A new environment; ``caller_environment_id`` set means a scoped caller (403).

        An unknown account is 404 not_found.
        """
        if caller_environment_id is not None:
            raise errors.Forbidden(
                "An environment-scoped key cannot create environments.",
                fix="Use an account-wide secret key.",
            )
        # The account's row lock, held until the transaction ends, before the
        # name is looked up: on PostgreSQL two creates of one name both found
        # none, and the second insert hit the unique constraint (a 500).
        if await self.accounts.get_for_update(account_id) is None:
            raise errors.AccountNotFound()
        if await self.repo.get_by_name(account_id, name) is not None:
            raise errors.Conflict(
                f"The account already has an environment named {name!r}.",
                fix="Choose another name, or use the existing environment.",
            )
        env_id, created_at = new_id("env")
        env = Environment(id=env_id, account_id=account_id, name=name, created_at=created_at)
        self.repo.add(env)
        self.audit.record(
            "environment.created", account_id=account_id, actor=actor, environment_id=env_id
        )
        await self.repo.flush()
        return env

    async def list(
        self, account_id: str, *, scope_environment_id: str | None = None
    ) -> list[Environment]:
        """All environments; an environment-scoped caller sees only its own."""
        return list(await self.repo.list(account_id, environment_id=scope_environment_id))
