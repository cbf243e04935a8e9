"""Accounts: the operator's customers. Each starts with one secret key."""

from __future__ import annotations

from dataclasses import dataclass

from keyhouse import errors
from keyhouse.accounts.repository import AccountRepository
from keyhouse.accounts.schemas import LimitsUpdate
from keyhouse.audit.service import Actor, AuditService
from keyhouse.db.session import DbSession
from keyhouse.ids import new_id
from keyhouse.keys.changes import ALL, mark_changed
from keyhouse.keys.service import IssuedKey, KeyService
from keyhouse.models import Account
from keyhouse.runtime import Runtime

__all__ = ["AccountService", "NewAccount"]

FIRST_KEY_NAME = "Default secret key"
_LIMIT_COLUMNS = {
    "maxKeys": "max_keys",
    "monthlyRequests": "monthly_requests",
    "ratePerSecond": "rate_per_second",
    "burst": "burst",
}


@dataclass(frozen=True, slots=True)
class NewAccount:
    account: Account
    key: IssuedKey


class AccountService:
    def __init__(self, session: DbSession, runtime: Runtime) -> None:
        self.runtime = runtime
        self.repo = AccountRepository(session)
        self.keys = KeyService(session, runtime)
        self.audit = AuditService(session)

    async def create(
        self, name: str, *, limits: LimitsUpdate | None = None, actor: Actor
    ) -> NewAccount:
        """A new account on the default plan (or ``limits``), with its first secret key."""
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
        if limits is not None:
            self._apply_limits(account, limits)
        self.repo.add(account)
        self.audit.record("account.created", account_id=account_id, actor=actor)
        await self.repo.flush()
        # The first key comes with the account, whatever its maxKeys.
        key = await self.keys.create(
            account_id, name=FIRST_KEY_NAME, key_type="secret", actor=actor, check_limit=False
        )
        return NewAccount(account, key)

    async def get(self, account_id: str) -> Account:
        account = await self.repo.get(account_id)
        if account is None:
            raise errors.AccountNotFound()
        return account

    async def list_accounts(self) -> list[Account]:
        return list(await self.repo.list())

    async def update(
        self,
        account_id: str,
        *,
        name: str | None = None,
        limits: LimitsUpdate | None = None,
        refuse_secret_keys_from_browsers: bool | None = None,
        actor: Actor,
    ) -> Account:
        """Rename, change limits and/or the browser guard; only the members given change.

        Under the account's row lock, so the change is decided on the plan
        as committed: two identical updates at once both saw a change and
        both recorded ``account.updated``; and key creation, which counts
        ``maxKeys`` under the same lock, sees the plan before or after.
        """
        account = await self.repo.get_for_update(account_id)
        if account is None:
            raise errors.AccountNotFound()
        changed: dict[str, object] = {}
        if name is not None and name != account.name:
            account.name = name
            changed["name"] = name
        if limits is not None:
            changed.update(self._apply_limits(account, limits))
        guard = refuse_secret_keys_from_browsers
        # A flag, not a secret (tests/test_constant_time.py reads names).
        refusing = account.refuse_secret_keys_from_browsers
        if guard is not None and guard != refusing:
            account.refuse_secret_keys_from_browsers = guard
            changed["refuseSecretKeysFromBrowsers"] = guard
        if changed:
            if changed.keys() - {"name"}:
                # Every cached key carries its account's plan and browser guard.
                mark_changed(self.repo.session, self.runtime, ALL)
            self.audit.record(
                "account.updated", account_id=account_id, actor=actor, data={"changed": changed}
            )
            await self.repo.flush()
        return account

    @staticmethod
    def _apply_limits(account: Account, limits: LimitsUpdate) -> dict[str, object]:
        changed: dict[str, object] = {}
        for member in limits.model_fields_set:
            column = _LIMIT_COLUMNS[member]
            value = getattr(limits, member)
            if getattr(account, column) != value:
                setattr(account, column, value)
                changed[member] = value
        return changed
