"""Accounts: the operator's customers. Each starts with one secret key."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from keyhouse import errors
from keyhouse.accounts.repository import AccountRepository
from keyhouse.ids import new_id
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import Account
from keyhouse.runtime import Runtime

__all__ = ["AccountService", "NewAccount"]

FIRST_KEY_NAME = "Default secret key"


@dataclass(frozen=True, slots=True)
class NewAccount:
    account: Account
    key: IssuedKey


class AccountService:
    def __init__(self, session: AsyncSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = AccountRepository(session)
        self.keys = KeyService(session, runtime)

    async def create(self, name: str) -> NewAccount:
        """A new account on the default plan, with its first account-wide secret key."""
        settings = self.runtime.settings
        account_id, created_at = new_id("acc")
        account = Account(
            id=account_id,
            name=name,
            created_at=created_at,
            max_keys=settings.default_max_keys,
            monthly_requests=settings.default_monthly_requests,
            rate_per_second=settings.default_rate_per_second,
            burst=settings.default_burst,
        )
        self.repo.add(account)
        await self.repo.flush()
        key = await self.keys.create(account_id, name=FIRST_KEY_NAME, key_type="secret")
        return NewAccount(account, key)

    async def get(self, account_id: str) -> Account:
        account = await self.repo.get(account_id)
        if account is None:
            raise errors.NotFound(
                f"Account {account_id!r} was not found.",
                fix="Check the account id (acc_...).",
            )
        return account
